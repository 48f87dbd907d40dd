/**
 * `wal verify`: checks every line's checksum and order. A complete line that is not a valid record is damage
 * (exit 3); an incomplete last line is a write cut short by a crash, whose record was never reported durable:
 * it is named but is not damage.
 */
import { listWalDirectory, scanWal } from "../wal/scan.ts";
import { EXIT } from "./exit.ts";
import { LineWriter } from "./output.ts";

export async function verifyCommand(dir: string): Promise<number> {
  const listing = await listWalDirectory(dir);
  const out = new LineWriter();
  let lines = 0;
  let damaged = 0;
  for await (const line of scanWal(dir, listing)) {
    lines++;
    if (line.kind === "damaged") {
      damaged++;
      await out.line(`wal: segment ${line.segment}: ${line.reason} at line ${line.line}`);
    } else if (line.kind === "torn") {
      await out.line(
        `wal: segment ${line.segment}: incomplete last line ${line.line} (cut off at the next start)`,
      );
    }
  }
  for (const name of listing.setAside) await out.line(`wal: ${name}: set aside by the service, not checked`);
  const segments = listing.segments.length;
  await out.line(
    damaged === 0
      ? `wal: ${dir}: ok (${segments} segments, ${lines} lines)`
      : `wal: ${dir}: ${damaged} damaged lines (${segments} segments, ${lines} lines)`,
  );
  await out.flush();
  return damaged === 0 ? EXIT.ok : EXIT.damaged;
}
