/**
 * `wal export`: the records waiting in the WAL as NDJSON on stdout, oldest first, one per line, in the record
 * shape of the HTTP batch endpoint plus the topic:
 * `{"topic":"t","value_b64":"...","key_b64":"...","headers":{"h":"v"},"partition":0}`.
 * key_b64, headers and partition appear only when the record has them. Headers whose values are not all UTF-8,
 * or whose names repeat, cannot be an object of strings: such a record carries `headers_b64`
 * (`[["h","<base64>"], ...]`, in order) instead. A record written with an explicit timestamp carries `timestamp`.
 */
import type { WalRecord } from "../wal/types.ts";
import { listWalDirectory, scanWal } from "../wal/scan.ts";
import { EXIT } from "./exit.ts";
import { LineWriter } from "./output.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true });

export async function exportCommand(dir: string, opts: { topic?: string }): Promise<number> {
  const listing = await listWalDirectory(dir);
  const out = new LineWriter();
  let damaged = 0;
  for await (const line of scanWal(dir, listing)) {
    if (!out.open) break;
    if (line.kind === "damaged") damaged++;
    if (line.kind !== "record" || line.acked) continue;
    if (opts.topic !== undefined && line.record.topic !== opts.topic) continue;
    await out.line(JSON.stringify(exportedRecord(line.record)));
  }
  await out.flush();
  // Not in the output, and a record may have been among them: whoever archives the export must hear it.
  if (damaged > 0) {
    console.error(`wal export: ${dir}: ${damaged} damaged lines left out (wal verify names them)`);
  }
  return EXIT.ok;
}

/** One record in the exported shape. */
export function exportedRecord(r: WalRecord): Record<string, unknown> {
  const o: Record<string, unknown> = { topic: r.topic, value_b64: r.value.toBase64() };
  if (r.key !== undefined && r.key !== null) o.key_b64 = r.key.toBase64();
  if (r.headers !== undefined && r.headers.length > 0) {
    const asText = textHeaders(r.headers);
    if (asText !== null) o.headers = asText;
    else o.headers_b64 = r.headers.map(([name, value]) => [name, value.toBase64()]);
  }
  if (r.partition !== undefined) o.partition = r.partition;
  if (r.timestamp !== undefined) o.timestamp = r.timestamp;
  return o;
}

/** The headers as an object of strings, or null when that would lose something. */
function textHeaders(headers: Array<[string, Uint8Array]>): Record<string, string> | null {
  const o: Record<string, string> = {};
  for (const [name, value] of headers) {
    // Integer-like names would be reordered by JSON.parse on the other side.
    if (Object.hasOwn(o, name) || /^\d+$/.test(name)) return null;
    try {
      o[name] = utf8.decode(value);
    } catch {
      return null;
    }
  }
  return o;
}
