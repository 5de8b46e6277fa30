/**
 * The Tokens layout (plugins/kinds.ts), written as a stream and read back as
 * typed arrays over whole files. A flat directory:
 *   meta.json     counts, special ids, how the sequences were made
 *   tokens.u32    ids of all sequences, concatenated, uint32 little-endian
 *   labels.i32    one per token; -100 where the loss ignores it (labels are not shifted)
 *   offsets.u32   count + 1 starts: sequence i is [offsets[i], offsets[i + 1])
 *   segments.u32  when packed: per token, the index of its example inside the sequence
 * The tokenize step writes it sharded instead, so an append shares the
 * unchanged parts with the previous output (hard links): meta.json holds the
 * same totals plus "parts", [{dir, count, tokens}, ...] in order, and each
 * part directory (TOKENS_PART) is a flat set of arrays with local offsets (0
 * to its token count) holding at least one whole sequence. The sequences are
 * the parts' in order. A meta.json without "parts" is flat: directories
 * written by hand or by older versions.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface TokensMeta {
  readonly count: number
  readonly tokens: number
  readonly vocabSize: number
  /** The BOS id every sequence starts with, or null when sequences have no BOS. */
  readonly bosId: number | null
  readonly eosId: number
  readonly padId: number
  readonly maxLength: number
  readonly packed: boolean
  /** The Tokenizer artifact's digest and kind, so a trainer can check it pairs with its model. */
  readonly tokenizer: { readonly type: string; readonly digest: string }
  /** The prompt format the records were rendered with. */
  readonly format: string
  readonly trainOnInputs: boolean
  /** Examples in the sequences (more than `count` when packed). */
  readonly examples: number
  /** Tokens whose label is not -100. */
  readonly trainTokens: number
  readonly labels: "unshifted"
  /** The parts of a sharded directory, in order; absent when it is flat. */
  readonly parts?: ReadonlyArray<TokensPartEntry>
}

/** The name of the `i`-th part of a Tokens directory: zero-padded, so sorting keeps the order. */
export const TOKENS_PART = (i: number): string => `part-${String(i).padStart(6, "0")}`

/** A part as meta.json lists it. */
export interface TokensPartEntry {
  readonly dir: string
  readonly count: number
  readonly tokens: number
}

const BUFFER_TOKENS = 1 << 20

if (os.endianness() !== "LE")
  throw new Error("the Tokens layout is little-endian; this machine is big-endian")

/** Appends to a file through a fixed typed buffer. */
class ArrayFile<A extends Uint32Array | Int32Array> {
  private fd: number
  private n = 0
  constructor(
    file: string,
    private readonly buf: A,
  ) {
    this.fd = fs.openSync(file, "w")
  }
  push(v: number): void {
    this.buf[this.n++] = v
    if (this.n === this.buf.length) this.flush()
  }
  pushAll(values: ReadonlyArray<number> | Uint32Array | Int32Array): void {
    if (ArrayBuffer.isView(values)) {
      // a typed array: copied in blocks
      let from = 0
      while (from < values.length) {
        const n = Math.min(values.length - from, this.buf.length - this.n)
        this.buf.set(values.subarray(from, from + n), this.n)
        this.n += n
        from += n
        if (this.n === this.buf.length) this.flush()
      }
      return
    }
    for (const v of values) {
      this.buf[this.n++] = v
      if (this.n === this.buf.length) this.flush()
    }
  }
  flush(): void {
    if (this.n === 0) return
    const bytes = new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.n * 4)
    let off = 0
    while (off < bytes.length) off += fs.writeSync(this.fd, bytes, off)
    this.n = 0
  }
  close(): void {
    this.flush()
    fs.closeSync(this.fd)
    this.fd = -1
  }
  abort(): void {
    if (this.fd >= 0) fs.closeSync(this.fd)
    this.fd = -1
  }
}

export interface Sequence {
  readonly ids: ReadonlyArray<number> | Uint32Array
  readonly labels: ReadonlyArray<number> | Int32Array
  /** Only for packed output: per token, the example index within the sequence. */
  readonly segments?: ReadonlyArray<number> | Uint32Array
}

export class TokensWriter {
  private readonly tokens: ArrayFile<Uint32Array>
  private readonly labels: ArrayFile<Int32Array>
  private readonly offsets: ArrayFile<Uint32Array>
  private readonly segments: ArrayFile<Uint32Array> | undefined
  private total = 0
  private sequences = 0
  private train = 0

  constructor(
    readonly dir: string,
    readonly packed: boolean,
  ) {
    fs.mkdirSync(dir, { recursive: true })
    this.tokens = new ArrayFile(path.join(dir, "tokens.u32"), new Uint32Array(BUFFER_TOKENS))
    this.labels = new ArrayFile(path.join(dir, "labels.i32"), new Int32Array(BUFFER_TOKENS))
    this.offsets = new ArrayFile(path.join(dir, "offsets.u32"), new Uint32Array(1 << 16))
    this.segments = packed
      ? new ArrayFile(path.join(dir, "segments.u32"), new Uint32Array(BUFFER_TOKENS))
      : undefined
    this.offsets.push(0)
  }

  get count(): number {
    return this.sequences
  }
  get tokenCount(): number {
    return this.total
  }
  get trainTokens(): number {
    return this.train
  }

  write(seq: Sequence): void {
    const n = seq.ids.length
    if (this.total + n > 0xffffffff) {
      throw new RangeError("more than 2^32 tokens: offsets.u32 cannot address them; split the records")
    }
    this.tokens.pushAll(seq.ids)
    this.labels.pushAll(seq.labels)
    const labels = seq.labels
    for (let i = 0; i < labels.length; i++) if (labels[i] !== -100) this.train++
    if (this.segments) {
      if (seq.segments === undefined)
        throw new Error("a packed Tokens output needs segments for every sequence")
      this.segments.pushAll(seq.segments)
    }
    this.total += n
    this.sequences++
    this.offsets.push(this.total)
  }

  /** Flushes and closes the arrays only (a part of a Tokens directory: its meta is the directory's). */
  closeArrays(): void {
    this.tokens.close()
    this.labels.close()
    this.offsets.close()
    this.segments?.close()
  }

  /** Closes the files after a failure, leaving no meta.json (the output is incomplete). */
  abort(): void {
    for (const f of [this.tokens, this.labels, this.offsets, this.segments]) f?.abort()
  }

  /** Flushes and closes the arrays and writes meta.json. */
  close(meta: Omit<TokensMeta, "count" | "tokens" | "packed" | "trainTokens" | "labels">): TokensMeta {
    this.tokens.close()
    this.labels.close()
    this.offsets.close()
    this.segments?.close()
    const full: TokensMeta = {
      ...meta,
      count: this.sequences,
      tokens: this.total,
      packed: this.packed,
      trainTokens: this.train,
      labels: "unshifted",
    }
    fs.writeFileSync(path.join(this.dir, "meta.json"), `${JSON.stringify(full, null, 2)}\n`)
    return full
  }
}

export interface TokensData {
  readonly meta: TokensMeta
  readonly tokens: Uint32Array
  readonly labels: Int32Array
  readonly offsets: Uint32Array
  readonly segments: Uint32Array | undefined
  /** Views (no copy) of sequence i. */
  sequence(i: number): { tokens: Uint32Array; labels: Int32Array; segments: Uint32Array | undefined }
}

const readArray = <A extends Uint32Array | Int32Array>(
  file: string,
  make: (b: ArrayBuffer, offset: number, length: number) => A,
): A => {
  const buf = fs.readFileSync(file)
  if (buf.byteLength % 4 !== 0)
    throw new Error(`${file}: ${buf.byteLength} bytes is not a whole number of 4-byte values`)
  // Small reads may come from Node's shared pool at an unaligned offset: copy those.
  const aligned = buf.byteOffset % 4 === 0 ? buf : Buffer.from(buf)
  return make(aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / 4)
}

/** The arrays of a flat Tokens directory, or of one part of a sharded one. */
export interface TokenArrays {
  readonly tokens: Uint32Array
  readonly labels: Int32Array
  readonly offsets: Uint32Array
  readonly segments: Uint32Array | undefined
}

type Arrays = TokenArrays

const u32 = (file: string) => readArray(file, (b, o, n) => new Uint32Array(b, o, n))

/** Loads the arrays of a flat directory as they are (no checks). */
const loadArrays = (dir: string, packed: boolean): Arrays => ({
  tokens: u32(path.join(dir, "tokens.u32")),
  labels: readArray(path.join(dir, "labels.i32"), (b, o, n) => new Int32Array(b, o, n)),
  offsets: u32(path.join(dir, "offsets.u32")),
  segments: packed ? u32(path.join(dir, "segments.u32")) : undefined,
})

/** Loads each part listed in meta.json, checks it, and joins them with offsets rebased to global positions. */
const readParts = (dir: string, meta: TokensMeta, parts: ReadonlyArray<TokensPartEntry>): Arrays => {
  if (!Array.isArray(parts)) throw new Error(`${dir}: meta.json "parts" is not a list`)
  const read = parts.map((p) => {
    const at = path.join(dir, String(p.dir))
    if (!fs.existsSync(at)) throw new Error(`${dir}: meta.json lists part ${p.dir}, which is missing`)
    const a = loadArrays(at, meta.packed)
    const file = (f: string) => path.join(at, f)
    const n = a.offsets.length - 1
    if (n !== p.count)
      throw new Error(
        `${file("offsets.u32")} has ${a.offsets.length} entries, meta.json says ${p.dir} holds ${p.count} sequences`,
      )
    if (a.tokens.length !== p.tokens)
      throw new Error(
        `${file("tokens.u32")} has ${a.tokens.length} tokens, meta.json says ${p.dir} holds ${p.tokens}`,
      )
    if (a.offsets[0] !== 0 || a.offsets[n] !== a.tokens.length)
      throw new Error(`${file("offsets.u32")} must start at 0 and end at ${a.tokens.length}`)
    if (a.labels.length !== a.tokens.length)
      throw new Error(`${file("labels.i32")} has ${a.labels.length} entries for ${a.tokens.length} tokens`)
    if (a.segments && a.segments.length !== a.tokens.length)
      throw new Error(
        `${file("segments.u32")} has ${a.segments.length} entries for ${a.tokens.length} tokens`,
      )
    return a
  })
  const count = read.reduce((n, a) => n + a.offsets.length - 1, 0)
  const total = read.reduce((n, a) => n + a.tokens.length, 0)
  if (count !== meta.count)
    throw new Error(`${dir}: meta.json says count ${meta.count}, its parts hold ${count}`)
  if (total !== meta.tokens)
    throw new Error(`${dir}: meta.json says tokens ${meta.tokens}, its parts hold ${total}`)
  if (total > 0xffffffff) throw new Error(`${dir}: more than 2^32 tokens: offsets cannot address them`)
  return joinParts(read, count, total, meta.packed)
}

/** Checked parts joined into one set: their arrays concatenated, offsets rebased to global positions. */
export const joinParts = (
  read: ReadonlyArray<Arrays>,
  count: number,
  total: number,
  segmented: boolean,
): Arrays => {
  const tokens = new Uint32Array(total)
  const labels = new Int32Array(total)
  const offsets = new Uint32Array(count + 1)
  const segments = segmented ? new Uint32Array(total) : undefined
  let base = 0
  let seq = 0
  for (const a of read) {
    tokens.set(a.tokens, base)
    labels.set(a.labels, base)
    if (segments && a.segments) segments.set(a.segments, base)
    const n = a.offsets.length - 1
    for (let i = 1; i <= n; i++) offsets[seq + i] = base + (a.offsets[i] as number)
    base += a.tokens.length
    seq += n
  }
  return { tokens, labels, offsets, segments }
}

/**
 * Loads a Tokens directory, flat or sharded, and checks that its arrays agree
 * with each other and with meta.json.
 */
export const readTokens = (dir: string): TokensData => {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8")) as TokensMeta
  const { tokens, labels, offsets, segments } =
    meta.parts === undefined ? readFlat(dir, meta) : readParts(dir, meta, meta.parts)
  return {
    meta,
    tokens,
    labels,
    offsets,
    segments,
    sequence(i) {
      const a = offsets[i]!
      const b = offsets[i + 1]!
      return {
        tokens: tokens.subarray(a, b),
        labels: labels.subarray(a, b),
        segments: segments?.subarray(a, b),
      }
    },
  }
}

/** Loads a flat directory and checks it. */
const readFlat = (dir: string, meta: TokensMeta): Arrays => {
  const { tokens, labels, offsets, segments } = loadArrays(dir, meta.packed)
  const bad = (what: string) => new Error(`${dir}: ${what}`)
  if (offsets.length !== meta.count + 1)
    throw bad(`offsets.u32 has ${offsets.length} entries, meta.json count is ${meta.count}`)
  if (tokens.length !== meta.tokens || offsets[meta.count] !== tokens.length) {
    throw bad(`tokens.u32 has ${tokens.length} tokens, meta.json says ${meta.tokens}`)
  }
  if (labels.length !== tokens.length)
    throw bad(`labels.i32 has ${labels.length} entries for ${tokens.length} tokens`)
  if (segments && segments.length !== tokens.length)
    throw bad(`segments.u32 has ${segments.length} entries for ${tokens.length} tokens`)
  return { tokens, labels, offsets, segments }
}
