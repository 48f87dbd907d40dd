/**
 * librdkafka through Deno FFI: the symbol table, struct layouts and the only code that touches native pointers.
 * Everything exported is typed and pointer-free (handles keep their pointers private).
 * Signatures and offsets follow rdkafka.h (x86_64 / aarch64 LP64 layouts); they are the same from librdkafka 2.0.2
 * to 2.12.1, the version scripts/librdkafka.sh builds.
 */
import type { Message } from "../message.ts";
import { ERR } from "./errors.ts";

const SYMBOLS = {
  rd_kafka_version_str: { parameters: [], result: "pointer" },
  rd_kafka_version: { parameters: [], result: "i32" },
  rd_kafka_name: { parameters: ["pointer"], result: "pointer" },
  rd_kafka_err2name: { parameters: ["i32"], result: "pointer" },
  rd_kafka_err2str: { parameters: ["i32"], result: "pointer" },
  rd_kafka_last_error: { parameters: [], result: "i32" },
  rd_kafka_conf_new: { parameters: [], result: "pointer" },
  rd_kafka_conf_destroy: { parameters: ["pointer"], result: "void" },
  rd_kafka_conf_set: { parameters: ["pointer", "buffer", "buffer", "buffer", "usize"], result: "i32" },
  rd_kafka_conf_get: { parameters: ["pointer", "buffer", "buffer", "buffer"], result: "i32" },
  rd_kafka_conf_set_events: { parameters: ["pointer", "i32"], result: "void" },
  rd_kafka_new: { parameters: ["i32", "pointer", "buffer", "usize"], result: "pointer" },
  rd_kafka_destroy: { parameters: ["pointer"], result: "void", nonblocking: true },
  rd_kafka_fatal_error: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  rd_kafka_test_fatal_error: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  rd_kafka_outq_len: { parameters: ["pointer"], result: "i32" },
  rd_kafka_queue_length: { parameters: ["pointer"], result: "usize" },
  rd_kafka_outq_len_async: {
    name: "rd_kafka_outq_len",
    parameters: ["pointer"],
    result: "i32",
    nonblocking: true,
  },
  rd_kafka_purge: { parameters: ["pointer", "i32"], result: "i32", nonblocking: true },
  rd_kafka_topic_new: { parameters: ["pointer", "buffer", "pointer"], result: "pointer" },
  rd_kafka_topic_destroy: { parameters: ["pointer"], result: "void" },
  // The opaque (last parameter) is a pointer-sized integer: the message id.
  rd_kafka_produce: {
    parameters: ["pointer", "i32", "i32", "buffer", "usize", "buffer", "usize", "usize"],
    result: "i32",
  },
  rd_kafka_produceva: { parameters: ["pointer", "buffer", "usize"], result: "pointer" },
  rd_kafka_produce_batch: { parameters: ["pointer", "i32", "i32", "buffer", "i32"], result: "i32" },
  rd_kafka_error_code: { parameters: ["pointer"], result: "i32" },
  rd_kafka_error_is_fatal: { parameters: ["pointer"], result: "i32" },
  rd_kafka_error_destroy: { parameters: ["pointer"], result: "void" },
  rd_kafka_queue_get_main: { parameters: ["pointer"], result: "pointer" },
  rd_kafka_queue_destroy: { parameters: ["pointer"], result: "void" },
  rd_kafka_queue_yield: { parameters: ["pointer"], result: "void" },
  rd_kafka_queue_poll: { parameters: ["pointer", "i32"], result: "pointer" },
  rd_kafka_queue_poll_async: {
    name: "rd_kafka_queue_poll",
    parameters: ["pointer", "i32"],
    result: "pointer",
    nonblocking: true,
  },
  rd_kafka_event_type: { parameters: ["pointer"], result: "i32" },
  rd_kafka_event_destroy: { parameters: ["pointer"], result: "void" },
  rd_kafka_event_message_next: { parameters: ["pointer"], result: "pointer" },
  rd_kafka_event_error: { parameters: ["pointer"], result: "i32" },
  rd_kafka_event_error_string: { parameters: ["pointer"], result: "pointer" },
  rd_kafka_event_error_is_fatal: { parameters: ["pointer"], result: "i32" },
  rd_kafka_event_stats: { parameters: ["pointer"], result: "pointer" },
  rd_kafka_event_log: { parameters: ["pointer", "buffer", "buffer", "buffer"], result: "i32" },
  rd_kafka_set_log_queue: { parameters: ["pointer", "pointer"], result: "i32" },
  rd_kafka_metadata: {
    parameters: ["pointer", "i32", "pointer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  rd_kafka_metadata_destroy: { parameters: ["pointer"], result: "void" },
} as const;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
type Pointer = NonNullable<Deno.PointerValue>;

/** Event types (rd_kafka_event_type). */
export const EVENT_DR = 0x1;
export const EVENT_LOG = 0x4;
export const EVENT_ERROR = 0x8;
export const EVENT_STATS = 0x40;

/** Partition "unassigned": librdkafka's partitioner chooses. */
export const PARTITION_UA = -1;

const PRODUCER = 0; // RD_KAFKA_PRODUCER
const CONF_OK = 0; // RD_KAFKA_CONF_OK
const MSG_F_COPY = 0x2;
const PURGE_F_QUEUE = 0x1;
const PURGE_F_INFLIGHT = 0x2;
const ERRSTR_SIZE = 512;

// rd_kafka_message_t: err i32 @0, rkt @8, partition i32 @16, payload @24, len @32, key @40, key_len @48,
// offset i64 @56, _private @64
const MSG_SIZE = 72;
const MSG_ERR = 0;
const MSG_PARTITION = 16;
const MSG_PAYLOAD = 24;
const MSG_LEN = 32;
const MSG_KEY = 40;
const MSG_KEY_LEN = 48;
const MSG_OFFSET = 56;
const MSG_PRIVATE = 64;
/**
 * Bytes of values and keys copied for one rd_kafka_produce_batch call, at most (a single larger message still goes
 * alone): bounds the arena a batch of big messages would otherwise grow.
 */
const BATCH_ARENA_BYTES = 4 * 1024 * 1024;

// rd_kafka_vu_t: vtype i32 @0, union @8, 72 bytes each. produceva takes a count: no VTYPE_END entry.
const VU_SIZE = 72;
const VTYPE_RKT = 2;
const VTYPE_PARTITION = 3;
const VTYPE_VALUE = 4;
const VTYPE_KEY = 5;
const VTYPE_OPAQUE = 6;
const VTYPE_MSGFLAGS = 7;
const VTYPE_TIMESTAMP = 8;
const VTYPE_HEADER = 9;

// rd_kafka_metadata_t: topic_cnt i32 @16, topics @24; rd_kafka_metadata_topic_t (32 bytes): topic name @0
const META_TOPIC_CNT = 16;
const META_TOPICS = 24;
const META_TOPIC_SIZE = 32;

const encoder = new TextEncoder();
/** A non-null address for empty values and keys (librdkafka reads a null address as a null value). */
const EMPTY = new Uint8Array(1);
const libraries = new Map<string, Symbols>();

const SONAME = "librdkafka.so.1";

/** librdkafka could not be loaded from any place it is looked for: the service cannot start. */
export class LibraryLoadError extends Error {
  override name = "LibraryLoadError";
}

/**
 * Where librdkafka is looked for when no path is given, in order: env LIBRDKAFKA_PATH (when set, the only
 * place), next to the running executable (the compiled binary ships it there), then the soname on the
 * dynamic loader's path.
 */
function openDefault(): Symbols {
  const configured = Deno.env.get("LIBRDKAFKA_PATH");
  if (configured) return dlopen(configured);
  const beside = `${Deno.execPath().replace(/[^/]*$/, "")}${SONAME}`;
  let besideProblem = "not there";
  try {
    Deno.statSync(beside);
    return Deno.dlopen(beside, SYMBOLS).symbols;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) besideProblem = errorText(e);
  }
  try {
    return Deno.dlopen(SONAME, SYMBOLS).symbols;
  } catch (e) {
    const tried = `LIBRDKAFKA_PATH is not set; next to the binary (${beside}): ${besideProblem}; ` +
      `system library path: ${errorText(e)}`;
    throw new LibraryLoadError(
      `librdkafka: cannot load ${SONAME}: ${tried} (put ${SONAME} next to the binary or set LIBRDKAFKA_PATH)`,
    );
  }
}

function dlopen(path: string): Symbols {
  try {
    return Deno.dlopen(path, SYMBOLS).symbols;
  } catch (e) {
    throw new LibraryLoadError(`librdkafka: cannot load "${path}" (LIBRDKAFKA_PATH): ${errorText(e)}`);
  }
}

function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ");
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s + "\0");
}

function readCString(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

function readErrstr(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/** One loaded librdkafka (loaded once per path and kept for the life of the process). */
export class RdLibrary {
  readonly #sym: Symbols;
  readonly #errNames = new Map<number, string>();
  readonly #errTexts = new Map<number, string>();

  private constructor(sym: Symbols) {
    this.#sym = sym;
  }

  /**
   * Loads librdkafka from `path`, or when none is given from the first place it is found (LIBRDKAFKA_PATH, next
   * to the executable, the system library path). Throws {@link LibraryLoadError} naming every place tried.
   */
  static open(path?: string): RdLibrary {
    let sym = libraries.get(path ?? "");
    if (!sym) {
      sym = path === undefined ? openDefault() : dlopen(path);
      libraries.set(path ?? "", sym);
    }
    return new RdLibrary(sym);
  }

  /** rd_kafka_version_str, e.g. "2.12.1". */
  version(): string {
    return readCString(this.#sym.rd_kafka_version_str());
  }

  /** rd_kafka_version, the version as one number (0xMMmmrrpp, e.g. 0x020c01ff for 2.12.1). */
  versionNumber(): number {
    return this.#sym.rd_kafka_version();
  }

  /** rd_kafka_err2name, e.g. "_MSG_TIMED_OUT". */
  errName(code: number): string {
    let name = this.#errNames.get(code);
    if (name === undefined) {
      name = readCString(this.#sym.rd_kafka_err2name(code));
      this.#errNames.set(code, name);
    }
    return name;
  }

  /** rd_kafka_err2str, e.g. "Local: Message timed out". */
  errText(code: number): string {
    let text = this.#errTexts.get(code);
    if (text === undefined) {
      text = readCString(this.#sym.rd_kafka_err2str(code));
      this.#errTexts.set(code, text);
    }
    return text;
  }

  /** A new, empty configuration (rd_kafka_conf_new). */
  newConfig(): RdConfig {
    const conf = this.#sym.rd_kafka_conf_new();
    if (conf === null) throw new Error("librdkafka: rd_kafka_conf_new failed");
    return new RdConfig(this.#sym, conf);
  }

  /**
   * Creates a producer from `conf` with the event API enabled for `events` (EVENT_* bits).
   * The producer takes `conf` over; on failure `conf` stays the caller's. Throws with librdkafka's reason.
   */
  newProducer(conf: RdConfig, events: number): RdProducer {
    const c = conf.take();
    this.#sym.rd_kafka_conf_set_events(c, events);
    const errstr = new Uint8Array(ERRSTR_SIZE);
    const rk = this.#sym.rd_kafka_new(PRODUCER, c, errstr, BigInt(ERRSTR_SIZE));
    if (rk === null) {
      conf.give(c);
      throw new Error(`librdkafka: cannot create producer: ${readErrstr(errstr)}`);
    }
    // Logs join the main queue as EVENT_LOG when log.queue=true; otherwise librdkafka keeps printing them.
    this.#sym.rd_kafka_set_log_queue(rk, null);
    return new RdProducer(this.#sym, rk);
  }
}

/** A configuration object (rd_kafka_conf_t) not yet given to a producer. */
export class RdConfig {
  readonly #sym: Symbols;
  #conf: Pointer | null;

  /** Wraps a conf pointer; use {@link RdLibrary.newConfig}. */
  constructor(sym: Symbols, conf: Pointer) {
    this.#sym = sym;
    this.#conf = conf;
  }

  #ptr(): Pointer {
    if (this.#conf === null) throw new Error("librdkafka: configuration already used or destroyed");
    return this.#conf;
  }

  /** rd_kafka_conf_set: returns null when accepted, else librdkafka's reason. */
  set(key: string, value: string): string | null {
    const errstr = new Uint8Array(ERRSTR_SIZE);
    const res = this.#sym.rd_kafka_conf_set(
      this.#ptr(),
      cString(key),
      cString(value),
      errstr,
      BigInt(ERRSTR_SIZE),
    );
    return res === CONF_OK ? null : readErrstr(errstr) || `rd_kafka_conf_set returned ${res}`;
  }

  /** rd_kafka_conf_get: the property's current value, or null when the property is unknown. */
  get(key: string): string | null {
    const name = cString(key);
    const size = new BigUint64Array(1);
    const sizeBytes = new Uint8Array(size.buffer);
    if (this.#sym.rd_kafka_conf_get(this.#ptr(), name, null, sizeBytes) !== CONF_OK) return null;
    const dest = new Uint8Array(Number(size[0]));
    if (this.#sym.rd_kafka_conf_get(this.#ptr(), name, dest, sizeBytes) !== CONF_OK) return null;
    return readErrstr(dest);
  }

  /** Frees the configuration unless a producer took it over. */
  destroy(): void {
    if (this.#conf !== null) this.#sym.rd_kafka_conf_destroy(this.#conf);
    this.#conf = null;
  }

  /** Hands the pointer over (to rd_kafka_new). */
  take(): Pointer {
    const c = this.#ptr();
    this.#conf = null;
    return c;
  }

  /** Takes the pointer back after a failed rd_kafka_new. */
  give(conf: Pointer): void {
    this.#conf = conf;
  }
}

/** One delivery report, filled in place by {@link RdEvent.nextDelivery}. */
export interface DeliveryReport {
  /** The id given to produce. */
  id: number;
  /** rd_kafka_resp_err_t; 0 = delivered. */
  err: number;
  partition: number;
  /** Exact below 2^53 (read without a BigInt per report). */
  offset: number;
}

/** A log line of librdkafka: syslog level (0 emergency .. 7 debug), facility, text. */
export interface RdLog {
  level: number;
  facility: string;
  message: string;
}

/** An error reported by librdkafka outside of a delivery report. */
export interface RdError {
  code: number;
  reason: string;
  fatal: boolean;
}

/** Fields of a message for {@link RdProducer.produceva}; buffers are copied by librdkafka. */
export type RdMessage = Message;

/** One event taken from the main queue; destroy it when done. */
export class RdEvent {
  readonly #sym: Symbols;
  #ev: Pointer | null;
  readonly #msg = new Uint8Array(MSG_SIZE);
  readonly #view = new DataView(this.#msg.buffer);
  /** rd_kafka_event_type: EVENT_DR, EVENT_ERROR, EVENT_STATS, ... */
  readonly type: number;

  /** Wraps an event pointer; events come from {@link RdProducer.poll}. */
  constructor(sym: Symbols, ev: Pointer) {
    this.#sym = sym;
    this.#ev = ev;
    this.type = sym.rd_kafka_event_type(ev);
  }

  #ptr(): Pointer {
    if (this.#ev === null) throw new Error("librdkafka: event already destroyed");
    return this.#ev;
  }

  /** Fills `out` with the next delivery report of a DR event; false when there is none left. */
  nextDelivery(out: DeliveryReport): boolean {
    const m = this.#sym.rd_kafka_event_message_next(this.#ptr());
    if (m === null) return false;
    copyMessage(m, this.#msg);
    const v = this.#view;
    out.err = v.getInt32(MSG_ERR, true);
    out.partition = v.getInt32(MSG_PARTITION, true);
    // As two 32-bit halves: a BigInt per report would be garbage right away.
    out.offset = v.getInt32(MSG_OFFSET + 4, true) * 2 ** 32 + v.getUint32(MSG_OFFSET, true);
    out.id = v.getUint32(MSG_PRIVATE + 4, true) * 2 ** 32 + v.getUint32(MSG_PRIVATE, true);
    return true;
  }

  /**
   * A copy of the value and key of the message the last {@link nextDelivery} read (librdkafka's own copy, made as
   * it was produced): what a failed message was, for one whose sender no longer holds it. A null key is null; a
   * null value is empty.
   */
  payload(): { value: Uint8Array; key: Uint8Array | null } {
    const v = this.#view;
    const valueAt = v.getBigUint64(MSG_PAYLOAD, true);
    const keyAt = v.getBigUint64(MSG_KEY, true);
    return {
      value: copyOut(valueAt, Number(v.getBigUint64(MSG_LEN, true))),
      key: keyAt === 0n ? null : copyOut(keyAt, Number(v.getBigUint64(MSG_KEY_LEN, true))),
    };
  }

  /** The error of an ERROR event. */
  error(): RdError {
    const ev = this.#ptr();
    return {
      code: this.#sym.rd_kafka_event_error(ev),
      reason: readCString(this.#sym.rd_kafka_event_error_string(ev)),
      fatal: this.#sym.rd_kafka_event_error_is_fatal(ev) !== 0,
    };
  }

  /** The statistics JSON of a STATS event. */
  stats(): string {
    return readCString(this.#sym.rd_kafka_event_stats(this.#ptr()));
  }

  /** The log line of a LOG event. */
  log(): RdLog {
    const out = new BigUint64Array(3);
    const bytes = new Uint8Array(out.buffer);
    this.#sym.rd_kafka_event_log(
      this.#ptr(),
      bytes.subarray(0, 8),
      bytes.subarray(8, 16),
      bytes.subarray(16),
    );
    return {
      level: new DataView(out.buffer).getInt32(16, true),
      facility: readCString(Deno.UnsafePointer.create(out[0])),
      message: readCString(Deno.UnsafePointer.create(out[1])),
    };
  }

  /** rd_kafka_event_destroy (idempotent). */
  destroy(): void {
    if (this.#ev !== null) this.#sym.rd_kafka_event_destroy(this.#ev);
    this.#ev = null;
  }
}

/**
 * Copies the rd_kafka_message_t at `from` into `into` (MSG_SIZE bytes), once per delivery report. libc's memcpy
 * through FFI is a fast call: 0.012 µs a copy against 0.085 for Deno.UnsafePointerView.copyInto, an op.
 */
function copyMessage(from: Pointer, into: Uint8Array<ArrayBuffer>): void {
  // memcpy writes MSG_SIZE bytes whatever `into` is: a shorter buffer would be memory after it.
  if (into.byteLength !== MSG_SIZE) {
    throw new RangeError(`librdkafka: a message copy needs ${MSG_SIZE} bytes`);
  }
  memcpy ??= libcMemcpy();
  memcpy(into, from);
}

let memcpy: ((into: Uint8Array<ArrayBuffer>, from: Pointer) => void) | undefined;

function libcMemcpy(): (into: Uint8Array<ArrayBuffer>, from: Pointer) => void {
  try {
    const libc = Deno.dlopen("libc.so.6", {
      memcpy: { parameters: ["buffer", "pointer", "usize"], result: "void" }, // its result, `into`, is not needed
    });
    const size = BigInt(MSG_SIZE); // a BigInt keeps the call a fast one
    return (into, from) => libc.symbols.memcpy(into, from, size);
  } catch {
    return (into, from) => Deno.UnsafePointerView.copyInto(from, into);
  }
}

/** A copy of `length` bytes at native address `at` (none when `at` is 0). */
function copyOut(at: bigint, length: number): Uint8Array {
  const bytes = new Uint8Array(at === 0n ? 0 : length);
  if (bytes.byteLength > 0) Deno.UnsafePointerView.copyInto(Deno.UnsafePointer.create(at)!, bytes);
  return bytes;
}

/**
 * rd_kafka_vu_t arrays for produceva, built in reused memory. Key, value and header bytes are copied into one
 * arena whose address is taken once, instead of taking the address of every buffer (librdkafka copies them again).
 */
class VuArray {
  entries = new Uint8Array(VU_SIZE * 16);
  count = 0;
  #view = new DataView(this.entries.buffer);
  #arena = new Uint8Array(0);
  #arenaAddress = 0;
  #used = 0;

  /** Empties the array and makes sure the arena can hold every byte of `msg`. */
  start(msg: RdMessage): void {
    const headers = msg.headers ?? [];
    let bytes = msg.value.byteLength + (msg.key?.byteLength ?? 0);
    for (const [name, value] of headers) bytes += name.length * 3 + 1 + value.byteLength;
    // Never zero-sized: an empty value must still get a non-null address (null would mean a null value).
    if (bytes >= this.#arena.byteLength) {
      this.#arena = new Uint8Array(Math.max(bytes, 2 * this.#arena.byteLength, 64 * 1024));
      this.#arenaAddress = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#arena)));
    }
    const size = VU_SIZE * (7 + headers.length);
    if (size > this.entries.byteLength) {
      this.entries = new Uint8Array(2 * size);
      this.#view = new DataView(this.entries.buffer);
    }
    this.count = 0;
    this.#used = 0;
  }

  #next(vtype: number): number {
    const at = VU_SIZE * this.count++;
    this.#view.setInt32(at, vtype, true);
    return at + 8;
  }

  #setU64(at: number, n: number): void {
    this.#view.setUint32(at, n >>> 0, true);
    this.#view.setUint32(at + 4, Math.floor(n / 0x100000000), true);
  }

  #copy(bytes: Uint8Array): number {
    const address = this.#arenaAddress + this.#used;
    this.#arena.set(bytes, this.#used);
    this.#used += bytes.byteLength;
    return address;
  }

  i32(vtype: number, n: number): void {
    this.#view.setInt32(this.#next(vtype), n, true);
  }

  i64(vtype: number, n: number): void {
    this.#view.setBigInt64(this.#next(vtype), BigInt(Math.trunc(n)), true);
  }

  u64(vtype: number, n: number): void {
    this.#setU64(this.#next(vtype), n);
  }

  pointer(vtype: number, p: Pointer): void {
    this.#view.setBigUint64(this.#next(vtype), Deno.UnsafePointer.value(p), true);
  }

  mem(vtype: number, bytes: Uint8Array): void {
    const at = this.#next(vtype);
    this.#setU64(at, this.#copy(bytes));
    this.#setU64(at + 8, bytes.byteLength);
  }

  header(name: string, value: Uint8Array): void {
    const at = this.#next(VTYPE_HEADER);
    const nameAddress = this.#arenaAddress + this.#used;
    this.#used += encoder.encodeInto(name, this.#arena.subarray(this.#used)).written;
    this.#arena[this.#used++] = 0;
    this.#setU64(at, nameAddress);
    this.#setU64(at + 8, this.#copy(value));
    this.#setU64(at + 16, value.byteLength);
  }
}

/**
 * rd_kafka_message_t arrays for rd_kafka_produce_batch, built in reused memory. Values and keys are copied into one
 * arena whose address is taken once, as for produceva; librdkafka copies them again (MSG_F_COPY) during the call and
 * writes each message's result into its `err`.
 */
class MessageArray {
  entries = new Uint8Array(MSG_SIZE * 64);
  #view = new DataView(this.entries.buffer);
  #arena = new Uint8Array(0);
  #arenaAddress = 0;

  /**
   * Fills entries for messages from `start` on, as many as fit BATCH_ARENA_BYTES (at least one, at most up to
   * `end`); message `start + k` gets the opaque `firstId + k`. Returns how many were filled.
   */
  fill(messages: readonly RdMessage[], start: number, end: number, firstId: number): number {
    let bytes = 0;
    let stop = start;
    for (; stop < end; stop++) {
      const m = messages[stop];
      const size = m.value.byteLength + (m.key?.byteLength ?? 0);
      if (stop > start && bytes + size > BATCH_ARENA_BYTES) break;
      bytes += size;
    }
    // Strictly larger: an empty value at the end still gets an address inside the arena, never a null one.
    if (bytes >= this.#arena.byteLength) {
      this.#arena = new Uint8Array(Math.max(bytes + 1, 2 * this.#arena.byteLength, 64 * 1024));
      this.#arenaAddress = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#arena)));
    }
    const count = stop - start;
    if (count * MSG_SIZE > this.entries.byteLength) {
      this.entries = new Uint8Array(2 * count * MSG_SIZE);
      this.#view = new DataView(this.entries.buffer);
    }
    const v = this.#view;
    let used = 0;
    for (let k = 0; k < count; k++) {
      const m = messages[start + k];
      const at = k * MSG_SIZE;
      v.setInt32(at + MSG_ERR, 0, true);
      v.setBigUint64(at + 8, 0n, true); // rkt: the topic is the call's
      v.setInt32(at + MSG_PARTITION, 0, true); // the call's partition applies (no RD_KAFKA_MSG_F_PARTITION)
      this.#setU64(at + MSG_PAYLOAD, this.#arenaAddress + used);
      this.#setU64(at + MSG_LEN, m.value.byteLength);
      this.#arena.set(m.value, used);
      used += m.value.byteLength;
      const key = m.key ?? null;
      // A null key stays null; an empty one gets a non-null address so that it stays empty.
      this.#setU64(at + MSG_KEY, key === null ? 0 : this.#arenaAddress + used);
      this.#setU64(at + MSG_KEY_LEN, key === null ? 0 : key.byteLength);
      if (key !== null) {
        this.#arena.set(key, used);
        used += key.byteLength;
      }
      v.setBigInt64(at + MSG_OFFSET, 0n, true);
      this.#setU64(at + MSG_PRIVATE, firstId + k);
    }
    return count;
  }

  /** The result librdkafka wrote for entry `k`: 0 or an error code. */
  err(k: number): number {
    return this.#view.getInt32(k * MSG_SIZE + MSG_ERR, true);
  }

  #setU64(at: number, n: number): void {
    this.#view.setUint32(at, n >>> 0, true);
    this.#view.setUint32(at + 4, Math.floor(n / 0x100000000), true);
  }
}

/**
 * Topic handles kept per producer, at most. Clients may name any number of topics; a handle dropped here is made
 * again (cheaply: librdkafka still knows the topic) when its topic is used again.
 */
const MAX_TOPIC_HANDLES = 1024;

/** The topic names of an rd_kafka_metadata_t. */
function readTopicNames(md: Deno.PointerObject): string[] {
  const view = new Deno.UnsafePointerView(md);
  const count = view.getInt32(META_TOPIC_CNT);
  const topics = view.getPointer(META_TOPICS);
  const names: string[] = [];
  if (topics !== null) {
    const tv = new Deno.UnsafePointerView(topics);
    for (let i = 0; i < count; i++) names.push(readCString(tv.getPointer(i * META_TOPIC_SIZE)));
  }
  return names;
}

/** A librdkafka producer handle (rd_kafka_t) with its main event queue and a topic handle cache. */
export class RdProducer {
  readonly #sym: Symbols;
  #rk: Pointer | null;
  #queue: Pointer | null;
  readonly #topics = new Map<string, Pointer>();
  readonly #vu = new VuArray();
  readonly #batch = new MessageArray();

  /** Wraps a producer pointer; use {@link RdLibrary.newProducer}. */
  constructor(sym: Symbols, rk: Pointer) {
    this.#sym = sym;
    this.#rk = rk;
    this.#queue = sym.rd_kafka_queue_get_main(rk);
  }

  #ptr(): Pointer {
    if (this.#rk === null) throw new Error("librdkafka: producer already destroyed");
    return this.#rk;
  }

  #topic(name: string): Pointer | null {
    let rkt = this.#topics.get(name);
    if (rkt === undefined) {
      const created = this.#sym.rd_kafka_topic_new(this.#ptr(), cString(name), null);
      if (created === null) return null;
      rkt = created;
      if (this.#topics.size >= MAX_TOPIC_HANDLES) {
        // The oldest handle goes; librdkafka keeps its topic alive while messages of it are in flight.
        const [oldest, handle] = this.#topics.entries().next().value!;
        this.#topics.delete(oldest);
        this.#sym.rd_kafka_topic_destroy(handle);
      }
      this.#topics.set(name, rkt);
    }
    return rkt;
  }

  /**
   * rd_kafka_produce (copying value and key); returns 0 or the error code.
   * A null key stays null; an empty value or key is sent as empty, which needs a non-null address.
   */
  produce(topic: string, partition: number, value: Uint8Array, key: Uint8Array | null, id: number): number {
    const rkt = this.#topic(topic);
    if (rkt === null) return this.#sym.rd_kafka_last_error();
    const keyLen = key === null ? 0 : key.byteLength;
    // A message's bytes are never in a SharedArrayBuffer, which is all that tells them from a BufferSource.
    const res = this.#sym.rd_kafka_produce(
      rkt,
      partition | 0, // -0 is no i32 to Deno's FFI: it throws
      MSG_F_COPY,
      (value.byteLength === 0 ? EMPTY : value) as BufferSource,
      BigInt(value.byteLength),
      (key !== null && keyLen === 0 ? EMPTY : key) as BufferSource | null,
      BigInt(keyLen),
      BigInt(id),
    );
    return res === 0 ? 0 : this.#sym.rd_kafka_last_error();
  }

  /**
   * rd_kafka_produceva: key, headers, explicit partition and timestamp; librdkafka copies every buffer.
   * Returns 0 or the error code; ERR.FATAL when the producer raised a fatal error, as rd_kafka_produce does.
   */
  produceva(msg: RdMessage, id: number): number {
    const rkt = this.#topic(msg.topic);
    if (rkt === null) return this.#sym.rd_kafka_last_error();
    const vu = this.#vu;
    vu.start(msg);
    vu.pointer(VTYPE_RKT, rkt);
    vu.i32(VTYPE_PARTITION, msg.partition ?? PARTITION_UA);
    vu.mem(VTYPE_VALUE, msg.value);
    if (msg.key) vu.mem(VTYPE_KEY, msg.key);
    if (msg.timestamp !== undefined) vu.i64(VTYPE_TIMESTAMP, msg.timestamp);
    for (const [name, value] of msg.headers ?? []) vu.header(name, value);
    vu.u64(VTYPE_OPAQUE, id);
    vu.i32(VTYPE_MSGFLAGS, MSG_F_COPY);
    const err = this.#sym.rd_kafka_produceva(this.#ptr(), vu.entries, BigInt(vu.count));
    if (err === null) return 0;
    const code = this.#sym.rd_kafka_error_is_fatal(err) !== 0
      ? ERR.FATAL
      : this.#sym.rd_kafka_error_code(err);
    this.#sym.rd_kafka_error_destroy(err);
    return code;
  }

  /**
   * rd_kafka_produce_batch (copying values and keys) for messages[start, end), which share `topic` and `partition`
   * and carry neither headers nor a timestamp (those go through produceva); message `start + k` gets the id
   * `firstId + k`. Writes each message's result, 0 or the error code, to codes[k]. As librdkafka does within one
   * call, every message after the first _QUEUE_FULL fails with it too, also across the calls a big run is split
   * into, so that a later message is never queued ahead of an earlier one.
   */
  produceBatch(
    topic: string,
    partition: number,
    messages: readonly RdMessage[],
    start: number,
    end: number,
    firstId: number,
    codes: Int32Array,
  ): void {
    const rkt = this.#topic(topic);
    if (rkt === null) {
      codes.fill(this.#sym.rd_kafka_last_error(), 0, end - start);
      return;
    }
    const batch = this.#batch;
    for (let at = start; at < end;) {
      const count = batch.fill(messages, at, end, firstId + at - start);
      // `batch.entries` is held by this object: alive for the whole synchronous call.
      const good = this.#sym.rd_kafka_produce_batch(rkt, partition | 0, MSG_F_COPY, batch.entries, count);
      const base = at - start;
      if (good === count) codes.fill(0, base, base + count);
      else for (let k = 0; k < count; k++) codes[base + k] = batch.err(k);
      at += count;
      if (codes[at - start - 1] === ERR.QUEUE_FULL) {
        codes.fill(ERR.QUEUE_FULL, at - start, end - start);
        return;
      }
    }
  }

  /** Waits up to `timeoutMs` on another thread for the next event of the main queue; null on timeout or wake-up. */
  async poll(timeoutMs: number): Promise<RdEvent | null> {
    const ev = await this.#sym.rd_kafka_queue_poll_async(this.#mainQueue(), timeoutMs);
    return ev === null ? null : new RdEvent(this.#sym, ev);
  }

  /** The next event that is ready now, without waiting; null when none. */
  pollReady(): RdEvent | null {
    const ev = this.#sym.rd_kafka_queue_poll(this.#mainQueue(), 0);
    return ev === null ? null : new RdEvent(this.#sym, ev);
  }

  /** Makes a waiting {@link poll} return at once (rd_kafka_queue_yield). */
  wakeUp(): void {
    if (this.#queue !== null) this.#sym.rd_kafka_queue_yield(this.#queue);
  }

  #mainQueue(): Pointer {
    if (this.#queue === null) throw new Error("librdkafka: main queue already destroyed");
    return this.#queue;
  }

  /** rd_kafka_queue_length of the main queue: events (delivery reports, errors, logs) ready to be polled. */
  eventQueueLength(): number {
    return Number(this.#sym.rd_kafka_queue_length(this.#mainQueue()));
  }

  /** rd_kafka_outq_len. */
  queueLength(): number {
    return this.#sym.rd_kafka_outq_len(this.#ptr());
  }

  /** rd_kafka_outq_len on another thread: also a cheap way to let the event loop run timers and I/O. */
  queueLengthAsync(): Promise<number> {
    return this.#sym.rd_kafka_outq_len_async(this.#ptr());
  }

  /** rd_kafka_name: the client's name, `<client.id>#producer-<n>` (n counts the process's producers from 1). */
  name(): string {
    return readCString(this.#sym.rd_kafka_name(this.#ptr()));
  }

  /** The producer's fatal error (rd_kafka_fatal_error), or null. */
  fatalError(): RdError | null {
    const errstr = new Uint8Array(ERRSTR_SIZE);
    const code = this.#sym.rd_kafka_fatal_error(this.#ptr(), errstr, BigInt(ERRSTR_SIZE));
    return code === 0 ? null : { code, reason: readErrstr(errstr), fatal: true };
  }

  /**
   * Raises a fabricated fatal error (rd_kafka_test_fatal_error), as librdkafka would on a real one; the reason is
   * prefixed with "test_fatal_error: ". Returns 0, or _PREV_IN_PROGRESS when a fatal error was already raised.
   */
  testFatalError(code: number, reason: string): number {
    return this.#sym.rd_kafka_test_fatal_error(this.#ptr(), code, cString(reason));
  }

  /**
   * Purges queued messages, and with `inFlight` those sent and not yet answered (rd_kafka_purge); their reports
   * then arrive as DR events.
   */
  purge(inFlight = true): Promise<number> {
    return this.#sym.rd_kafka_purge(this.#ptr(), inFlight ? PURGE_F_QUEUE | PURGE_F_INFLIGHT : PURGE_F_QUEUE);
  }

  /**
   * Asks a broker for metadata (of the locally known topics only, the lightest request) on another thread,
   * waiting up to `timeoutMs` for a broker to connect and answer; the error code, 0 when one did.
   */
  async metadataProbe(timeoutMs: number): Promise<number> {
    return (await this.#metadata(false, timeoutMs, () => undefined)).code;
  }

  /** Topic names of the cluster (rd_kafka_metadata, all topics) on another thread; `code` 0 on success. */
  async topicNames(timeoutMs: number): Promise<{ code: number; names: string[] }> {
    const { code, value } = await this.#metadata(true, timeoutMs, readTopicNames);
    return { code, names: value ?? [] };
  }

  /** rd_kafka_metadata on another thread; `read` sees the result before it is freed (no value on an error). */
  async #metadata<T>(
    allTopics: boolean,
    timeoutMs: number,
    read: (md: Deno.PointerObject) => T,
  ): Promise<{ code: number; value?: T }> {
    const out = new BigUint64Array(1);
    const outBytes = new Uint8Array(out.buffer);
    const code = await this.#sym.rd_kafka_metadata(this.#ptr(), allTopics ? 1 : 0, null, outBytes, timeoutMs);
    const md = code === 0 ? Deno.UnsafePointer.create(out[0]) : null;
    if (md === null) return { code };
    try {
      return { code, value: read(md) };
    } finally {
      this.#sym.rd_kafka_metadata_destroy(md);
    }
  }

  /**
   * Frees the queue, the topic handles and the producer (rd_kafka_destroy runs on another thread).
   * Call only when no {@link poll}, purge or metadata request is in flight.
   */
  async destroy(): Promise<void> {
    const rk = this.#rk;
    if (rk === null) return;
    if (this.#queue !== null) this.#sym.rd_kafka_queue_destroy(this.#queue);
    this.#queue = null;
    for (const rkt of this.#topics.values()) this.#sym.rd_kafka_topic_destroy(rkt);
    this.#topics.clear();
    this.#rk = null;
    await this.#sym.rd_kafka_destroy(rk);
  }
}

/**
 * glibc's `malloc_trim(0)`, which gives freed heap memory back to the operating system (src/malloc_trim.ts says
 * why); true when some was. Loaded here, with librdkafka, as this file is the one that loads native code. null
 * on a C library without it (musl).
 */
export function libcMallocTrim(): (() => boolean) | null {
  try {
    const libc = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
    return () => libc.symbols.malloc_trim(0n) === 1;
  } catch {
    return null;
  }
}
