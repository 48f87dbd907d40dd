/**
 * Every relative link in README.md and docs/*.md points at a file of the repository, and a `#fragment` into a
 * Markdown file names one of its headings (as GitHub makes anchors of them). Links inside code are not links.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** The lines of a Markdown file outside fenced code blocks (those inside are left empty). */
function outsideFences(markdown: string): string {
  let fenced = false;
  return markdown.split("\n").map((line) => {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      return "";
    }
    return fenced ? "" : line;
  }).join("\n");
}

/** The text of a Markdown file outside code: fenced blocks and inline code spans taken out. */
function prose(markdown: string): string {
  return outsideFences(markdown).replace(/(`+).*?\1/g, "");
}

/** The targets of the inline links and images of a Markdown text: `[text](target)`, `![alt](target "title")`. */
export function linkTargets(markdown: string): string[] {
  const link = /\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+"[^"]*")?\s*\)/g;
  return [...prose(markdown).matchAll(link)].map((match) => match[1] ?? match[2]);
}

/** The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as `-`. */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  for (const [, title] of outsideFences(markdown).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = title.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
    let anchor = base;
    for (let n = 1; anchors.has(anchor); n++) anchor = `${base}-${n}`;
    anchors.add(anchor);
  }
  return anchors;
}

/** What is wrong with one link of the file at `from`, or null when it is fine or not relative. */
async function problem(from: URL, target: string): Promise<string | null> {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return null; // https:, mailto:
  const [path, fragment] = target.split("#", 2);
  const file = path === "" ? from : new URL(path, from);
  let text: string;
  try {
    const info = await Deno.stat(file);
    if (!info.isFile || fragment === undefined || !file.pathname.endsWith(".md")) return null;
    text = await Deno.readTextFile(file);
  } catch {
    return `${target}: no such file`;
  }
  return headingAnchors(text).has(decodeURIComponent(fragment)) ? null : `${target}: no such heading`;
}

async function documents(): Promise<URL[]> {
  const docs: URL[] = [new URL("README.md", ROOT)];
  for await (const entry of Deno.readDir(new URL("docs/", ROOT))) {
    if (entry.isFile && entry.name.endsWith(".md")) docs.push(new URL(`docs/${entry.name}`, ROOT));
  }
  return docs.sort((a, b) => a.pathname.localeCompare(b.pathname));
}

Deno.test("links are read from prose only, with their titles and angle brackets taken off", () => {
  const markdown = [
    'See [the WAL](docs/wal.md#files), ![a chart](<img/a b.png>) and [x](y.md "title").',
    "Not a link: `[a](code.md)`.",
    "```",
    "[b](fenced.md)",
    "```",
  ].join("\n");
  assert.deepEqual(linkTargets(markdown), ["docs/wal.md#files", "img/a b.png", "y.md"]);
});

Deno.test("heading anchors follow GitHub's rule, repeated titles numbered", () => {
  const markdown =
    "# Title\n## main.ts\n## Files: `LOCK`, segments\n## Files: `LOCK`, segments\n```\n# not one\n```";
  assert.deepEqual([...headingAnchors(markdown)], [
    "title",
    "maints",
    "files-lock-segments",
    "files-lock-segments-1",
  ]);
});

Deno.test("every relative link in README.md and docs/*.md points at an existing file and heading", async () => {
  const broken: string[] = [];
  let links = 0;
  for (const doc of await documents()) {
    const name = doc.pathname.slice(ROOT.pathname.length);
    for (const target of linkTargets(await Deno.readTextFile(doc))) {
      links++;
      const found = await problem(doc, target);
      if (found) broken.push(`${name}: ${found}`);
    }
  }
  assert.ok(links > 0, "the documents have links");
  assert.deepEqual(broken, []);
});
