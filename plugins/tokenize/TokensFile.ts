/**
 * The Tokens layout (plugins/kinds.ts), written as a stream and read back as
 * typed arrays over whole files:
 *   meta.json     counts, special ids, how the sequences were made
 *   tokens.u32    ids of all sequences, concatenated, uint32 little-endian
 *   labels.i32    one per token; -100 where the loss ignores it (labels are not shifted)
 *   offsets.u32   count + 1 starts: sequence i is [offsets[i], offsets[i + 1])
 *   segments.u32  when packed: per token, the index of its example inside the sequence
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

/** Loads a Tokens directory and checks that its arrays agree with each other and with meta.json. */
export const readTokens = (dir: string): TokensData => {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8")) as TokensMeta
  const tokens = readArray(path.join(dir, "tokens.u32"), (b, o, n) => new Uint32Array(b, o, n))
  const labels = readArray(path.join(dir, "labels.i32"), (b, o, n) => new Int32Array(b, o, n))
  const offsets = readArray(path.join(dir, "offsets.u32"), (b, o, n) => new Uint32Array(b, o, n))
  const segments = meta.packed
    ? readArray(path.join(dir, "segments.u32"), (b, o, n) => new Uint32Array(b, o, n))
    : undefined
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
