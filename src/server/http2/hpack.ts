/**
 * HPACK (RFC 7541), the header compression of HTTP/2, for a server: a decoder of request header blocks (static
 * and dynamic table, Huffman strings, table size updates) and an encoder of response headers and trailers.
 *
 * The encoder never adds to the client's dynamic table: it sends static-table indexes and literals without
 * indexing (RFC 7541 6.2.2), plain (no Huffman). A gRPC reply's headers are two or three short fields, so
 * indexing would save a few bytes per call at the price of state to keep in step.
 */
import { huffmanDecode } from "./huffman.ts";

/** One header field, name in lower case as HTTP/2 requires. */
export type HeaderField = readonly [name: string, value: string];

/** RFC 7541 Appendix A. Index 1 is the first entry. */
const STATIC_TABLE: readonly HeaderField[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** Bytes an entry counts for in a table, and for SETTINGS_MAX_HEADER_LIST_SIZE (RFC 7541 4.1). */
const ENTRY_OVERHEAD = 32;

/**
 * The dynamic table size the client may use (SETTINGS_HEADER_TABLE_SIZE at its default: we never announce
 * another), and the most a table size update may ask for.
 */
const TABLE_SIZE = 4096;

/** Why a header block cannot be decoded; the connection ends with COMPRESSION_ERROR. */
export class HpackError extends Error {}

/** A decoded header block. */
export interface HeaderBlock {
  fields: HeaderField[];
  /** Sum of name + value + 32 over the fields (RFC 9113 6.5.2), also when over the limit. */
  listSize: number;
}

/**
 * Header strings are octets (RFC 9113 8.2); they are held as Latin-1 strings, one character per octet, so that a
 * string's length is the octet count the table sizes are made of, and encoding gives the same octets back.
 */
function latin1(bytes: Uint8Array): string {
  let s = "";
  // Chunks keep the argument list of fromCharCode short.
  for (let i = 0; i < bytes.byteLength; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(i + 4096, bytes.byteLength)));
  }
  return s;
}

/**
 * Decoder of one connection's request header blocks; its dynamic table carries over from block to block, so
 * every block the peer sends must pass through it in order, even one whose stream is refused.
 */
export class HpackDecoder {
  /** Newest entry last. */
  readonly #table: HeaderField[] = [];
  #tableBytes = 0;
  #maxTableBytes = TABLE_SIZE;

  /** Bytes held by the dynamic table, as RFC 7541 counts them. */
  get tableBytes(): number {
    return this.#tableBytes;
  }

  /**
   * Decodes one complete header block (HEADERS plus its CONTINUATIONs); throws HpackError. Past `maxListSize`
   * the fields are counted, not kept: the block is still read to the end for the dynamic table, but a block of
   * references to one large entry cannot make a list of millions of fields.
   */
  decode(block: Uint8Array, maxListSize = Infinity): HeaderBlock {
    const fields: HeaderField[] = [];
    let listSize = 0;
    let pos = 0;
    let sizeUpdateAllowed = true;
    const integer = (prefixBits: number): number => {
      if (pos >= block.byteLength) throw new HpackError("hpack: header block ends inside an integer");
      const max = (1 << prefixBits) - 1;
      let value = block[pos++] & max;
      if (value < max) return value;
      for (let shift = 0;; shift += 7) {
        if (pos >= block.byteLength) throw new HpackError("hpack: header block ends inside an integer");
        // 2^28 and more cannot be a length or index we would accept; refuse before the number grows unsafe.
        if (shift > 21) throw new HpackError("hpack: integer too large");
        const b = block[pos++];
        value += (b & 0x7f) * 2 ** shift;
        if ((b & 0x80) === 0) return value;
      }
    };
    const string = (): string => {
      if (pos >= block.byteLength) throw new HpackError("hpack: header block ends before a string");
      const huffman = (block[pos] & 0x80) !== 0;
      const length = integer(7);
      if (length > block.byteLength - pos) throw new HpackError("hpack: string longer than the header block");
      const raw = block.subarray(pos, pos + length);
      pos += length;
      if (!huffman) return latin1(raw);
      const decoded = huffmanDecode(raw);
      if (typeof decoded === "string") throw new HpackError(`hpack: ${decoded}`);
      return latin1(decoded);
    };
    const emit = (field: HeaderField) => {
      listSize += field[0].length + field[1].length + ENTRY_OVERHEAD;
      if (listSize <= maxListSize) fields.push(field);
    };
    while (pos < block.byteLength) {
      const b = block[pos];
      if (b & 0x80) {
        // Indexed header field (6.1).
        emit(this.#entry(integer(7)));
      } else if (b & 0x40) {
        // Literal with incremental indexing (6.2.1).
        const index = integer(6);
        const name = index === 0 ? string() : this.#entry(index)[0];
        const field: HeaderField = [name, string()];
        this.#add(field);
        emit(field);
      } else if (b & 0x20) {
        // Dynamic table size update (6.3): only before the first field of a block (4.2).
        if (!sizeUpdateAllowed) throw new HpackError("hpack: table size update after a header field");
        const size = integer(5);
        if (size > TABLE_SIZE) {
          throw new HpackError(`hpack: table size update to ${size} over the limit ${TABLE_SIZE}`);
        }
        this.#maxTableBytes = size;
        this.#evict(0);
        continue;
      } else {
        // Literal without indexing (6.2.2) or never indexed (6.2.3): 4-bit prefix either way.
        const index = integer(4);
        const name = index === 0 ? string() : this.#entry(index)[0];
        emit([name, string()]);
      }
      sizeUpdateAllowed = false;
    }
    return { fields, listSize };
  }

  #entry(index: number): HeaderField {
    if (index === 0) throw new HpackError("hpack: index 0");
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1];
    const dynamic = index - STATIC_TABLE.length;
    if (dynamic > this.#table.length) throw new HpackError(`hpack: index ${index} beyond the tables`);
    return this.#table[this.#table.length - dynamic];
  }

  #add(field: HeaderField): void {
    const size = field[0].length + field[1].length + ENTRY_OVERHEAD;
    // An entry larger than the table empties it and is not added (4.4).
    this.#evict(size);
    if (size <= this.#maxTableBytes) {
      this.#table.push(field);
      this.#tableBytes += size;
    }
  }

  /** Drops the oldest entries until `room` more bytes fit. */
  #evict(room: number): void {
    while (this.#table.length > 0 && this.#tableBytes + room > this.#maxTableBytes) {
      const [name, value] = this.#table.shift()!;
      this.#tableBytes -= name.length + value.length + ENTRY_OVERHEAD;
    }
  }
}

/** Name -> static index, for literals with an indexed name. */
const STATIC_NAMES = new Map<string, number>();
STATIC_TABLE.forEach(([name], i) => STATIC_NAMES.has(name) || STATIC_NAMES.set(name, i + 1));
/** Whole fields that the static table holds, e.g. ":status: 200" -> 8. */
const STATIC_FIELDS = new Map<string, number>(STATIC_TABLE.map(([n, v], i) => [`${n}\0${v}`, i + 1]));

/**
 * Encodes response headers or trailers: static-table indexes where a whole field is there, otherwise literals
 * without indexing, plain. Names must be lower case already; strings are Latin-1 (one octet per character).
 */
export function encodeHeaders(fields: ReadonlyArray<HeaderField>): Uint8Array {
  const out: number[] = [];
  const integer = (value: number, prefixBits: number, firstByte: number) => {
    const max = (1 << prefixBits) - 1;
    if (value < max) {
      out.push(firstByte | value);
      return;
    }
    out.push(firstByte | max);
    value -= max;
    while (value >= 0x80) {
      out.push((value & 0x7f) | 0x80);
      value = Math.floor(value / 128);
    }
    out.push(value);
  };
  const string = (s: string) => {
    integer(s.length, 7, 0);
    for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i) & 0xff);
  };
  for (const [name, value] of fields) {
    const whole = STATIC_FIELDS.get(`${name}\0${value}`);
    if (whole !== undefined) {
      integer(whole, 7, 0x80);
      continue;
    }
    const nameIndex = STATIC_NAMES.get(name);
    if (nameIndex !== undefined) {
      integer(nameIndex, 4, 0);
    } else {
      out.push(0);
      string(name);
    }
    string(value);
  }
  return new Uint8Array(out);
}
