/**
 * The image's runtime file set, proven without Docker: scripts/rootfs.sh builds a root filesystem from the Debian
 * packages distroless cc is made of plus the ones the Dockerfile adds (deploy/runtime-packages.txt), the test
 * chroots into it as the image's non-root user (65532) and runs the service there (the pinned Deno and the bundle
 * stand in for the compiled binary; the librdkafka build of scripts/librdkafka.sh goes next to it, as in the
 * image), producing to a real broker on loopback. Needs root (chroot, mounts).
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { startBroker } from "./kafka/broker.ts";
import { runCommand } from "./kafka/command.ts";
import { consumeAll } from "./kafka/consume.ts";
import { buildBundle, DENO, serviceFlags } from "./support/bundle.ts";
import { LIBRDKAFKA_PATH } from "./support/librdkafka.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

const REPO = new URL("../", import.meta.url).pathname;
const IS_ROOT = Deno.uid() === 0;
const NONROOT = 65532;
const LIBDIR = "usr/lib/x86_64-linux-gnu";

if (!IS_ROOT) console.log("rootfs_test: skipped: building and entering a chroot needs root");

/**
 * A command line that runs `argv` chrooted into `root` as the image's user, with /proc and /dev as a container has,
 * and without LIBRDKAFKA_PATH: the image does not set it.
 */
function inChroot(root: string, argv: string[]): { cmd: string; args: string[] } {
  const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  return {
    cmd: "unshare",
    args: [
      "--mount",
      "sh",
      "-c",
      `mount -t proc proc '${root}/proc' && mount --bind /dev '${root}/dev' && ` +
      `exec env -u LIBRDKAFKA_PATH chroot --userspec=${NONROOT}:${NONROOT} '${root}' ${quoted}`,
    ],
  };
}

/** The shared objects a process has mapped: file name -> path inside its root. */
function mappedLibraries(pid: number): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n")) {
    const path = line.split(/\s+/)[5];
    if (path?.includes(".so")) paths.set(path.slice(path.lastIndexOf("/") + 1), path);
  }
  return paths;
}

/** The pid of the process whose root directory is `root`. */
function pidInside(root: string): number {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readLinkSync(`/proc/${entry.name}/root`) === root) return Number(entry.name);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  throw new Error(`no process runs in ${root}`);
}

Deno.test({
  name: "rootfs: in a chroot of the image's packages, as user 65532, the service produces to Kafka",
  ignore: !IS_ROOT,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const bundle = await buildBundle();
    await using fs = await tempDir("ka-rootfs-");
    const root = `${fs.path}/root`;
    const built = await runCommand("bash", [`${REPO}scripts/rootfs.sh`, root], { timeoutMs: 300_000 });
    assert.equal(built.code, 0, built.stderr);
    const layer = `${fs.path}/layer`;
    const layered = await runCommand("bash", [`${REPO}scripts/rootfs.sh`, "--layer", layer], {
      timeoutMs: 60_000,
    });
    assert.equal(layered.code, 0, layered.stderr);
    await Deno.mkdir(`${root}/usr/local/bin`, { recursive: true });
    await Deno.copyFile(DENO, `${root}/usr/local/bin/deno`);
    await Deno.copyFile(bundle, `${root}/kafka-ambassador.js`);
    const service = [
      "/usr/local/bin/deno",
      "run",
      "--no-prompt",
      ...await serviceFlags(),
      "/kafka-ambassador.js",
    ];

    // Without librdkafka beside the binary the service cannot start (no package brings one): exit 1, one line
    // naming every place it looked.
    const bare = inChroot(root, [...service, "--version"]);
    const missing = await runCommand(bare.cmd, bare.args, { timeoutMs: 30_000 });
    assert.equal(missing.code, 1, missing.stderr);
    const lines = missing.stderr.trim().split("\n");
    assert.equal(lines.length, 1, missing.stderr);
    assert.match(
      lines[0],
      /LIBRDKAFKA_PATH is not set; next to the binary \(\/usr\/local\/bin\/librdkafka\.so\.1\)/,
    );
    assert.match(lines[0], /system library path: .*librdkafka\.so\.1/);
    assert.ok(LIBRDKAFKA_PATH, "no librdkafka build to ship (scripts/setup.sh makes it)");
    await Deno.copyFile(LIBRDKAFKA_PATH, `${root}/usr/local/bin/librdkafka.so.1`);

    await using broker = await startBroker();
    await broker.createTopic("rootfs-demo");
    const shipped = parse(await Deno.readTextFile(`${root}/etc/kafka-ambassador/config.yaml`));
    const walPath = "/var/lib/kafka-ambassador/data/wal";
    await using svc = await startService({
      ...shipped,
      server: undefined,
      producer: { ...shipped.producer, wal: { ...shipped.producer.wal, path: walPath } },
      kafka: { ...shipped.kafka, brokers: [broker.bootstrap] },
    }, {
      dir: `${root}/etc/kafka-ambassador`,
      command: (configPath) => inChroot(root, [...service, "-config", configPath.slice(root.length)]),
    });
    const value = `from the rootfs ${crypto.randomUUID()}`;
    const r = await fetch(`${svc.http}/topics/rootfs-demo/messages?ack=kafka`, {
      method: "POST",
      body: value,
    });
    assert.equal(r.status, 200, await r.clone().text());
    await r.body?.cancel();
    const read = await consumeAll(broker.bootstrap, "rootfs-demo", { expected: 1 });
    assert.deepEqual(read.map((m) => m.value), [value]);

    // librdkafka is the one beside the binary, and every library the image adds is one the running service has
    // loaded: nothing shipped is unused.
    const mapped = mappedLibraries(pidInside(root));
    const loaded = mapped.get("librdkafka.so.1") ?? "";
    assert.ok(loaded.endsWith("/usr/local/bin/librdkafka.so.1"), `librdkafka loaded from ${loaded}`);
    const added = [...Deno.readDirSync(`${layer}/${LIBDIR}`)].filter((e) => e.isFile).map((e) => e.name);
    assert.ok(added.length > 0, `layer: ${added}`);
    for (const name of added) {
      assert.ok(mapped.has(name), `${name} is shipped but not loaded; loaded: ${[...mapped.keys()]}`);
    }
    assert.equal((await Deno.stat(`${root}${walPath}`)).uid, NONROOT);
    assert.equal(await svc.stop(), 0);
  },
});
