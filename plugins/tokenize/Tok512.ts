/**
 * llama2.c's tokenizer (`tok*.bin`): SentencePiece BPE as exported by
 * llama2.c, encoded and decoded exactly as `encode`/`decode` in its run.c.
 *
 * File layout (little-endian): int32 max token length, then per token
 * float32 score, int32 byte length, bytes. The vocabulary size is not stored:
 * it is the number of entries up to the end of the file. Id 0 is `<unk>`,
 * 1 BOS, 2 EOS, 3..258 the byte fallbacks `<0x00>`..`<0xFF>`.
 *
 * run.c merges by rescanning every adjacent pair after each merge (O(n^2));
 * here the candidate merges sit in a priority queue over a linked list, which
 * yields the same ids: the highest-scoring pair first, the leftmost on ties.
 */
import * as fs from "node:fs"
import { StepError } from "../../core/Plugin.ts"

export interface EncodeOptions {
  /** Prepend BOS (id 1). */
  readonly bos?: boolean
  /** Append EOS (id 2). */
  readonly eos?: boolean
  /**
   * SentencePiece's dummy-prefix space in front of non-empty text (default
   * true, as run.c). Off for text that continues a sequence already started.
   */
  readonly dummyPrefix?: boolean
}

export interface DecodeOptions {
  /** Leave out BOS and EOS pieces (default true). */
  readonly skipSpecial?: boolean
}

/** run.c starts its best score here, so a pair scoring at or below it never merges. */
const NO_SCORE = -1e10
const BYTE_FALLBACK_OFFSET = 3
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/

export class Llama2cTokenizer {
  readonly bosId = 1
  readonly eosId = 2
  readonly vocabSize: number
  /** Pieces as latin1 strings: one char per byte, so concatenation matches byte concatenation. */
  private readonly byteKeys: ReadonlyArray<string>
  private readonly pieceBytes: ReadonlyArray<Uint8Array>
  private readonly byteValue: Int16Array
  private readonly ids: ReadonlyMap<string, number>
  /** Ids of single-byte pieces (ASCII text), -1 when absent. */
  private readonly singleByte: Int32Array
  /** Merge table: (left id * vocabSize + right id) -> merged id. */
  private readonly merges: ReadonlyMap<number, number>
  private readonly spaceId: number

  constructor(
    pieces: ReadonlyArray<Uint8Array>,
    readonly scores: Float32Array,
    readonly maxTokenLength: number,
  ) {
    this.vocabSize = pieces.length
    this.pieceBytes = pieces
    this.byteKeys = pieces.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("latin1"))
    const ids = new Map<string, number>()
    // run.c finds a piece by binary search; with duplicate pieces the first id wins here.
    this.byteKeys.forEach((k, i) => {
      if (!ids.has(k)) ids.set(k, i)
    })
    this.ids = ids
    this.singleByte = new Int32Array(256).fill(-1)
    for (let b = 0; b < 256; b++) {
      const id = ids.get(String.fromCharCode(b))
      if (id !== undefined) this.singleByte[b] = id
    }
    this.byteValue = new Int16Array(pieces.length).fill(-1)
    this.byteKeys.forEach((k, i) => {
      const m = BYTE_PIECE.exec(k)
      if (m) this.byteValue[i] = Number.parseInt(m[1]!, 16)
    })
    // A pair merges iff its concatenation is a piece, so every split of every piece lists them all.
    const merges = new Map<number, number>()
    const V = pieces.length
    this.byteKeys.forEach((k, id) => {
      if (ids.get(k) !== id) return
      for (let cut = 1; cut < k.length; cut++) {
        const a = ids.get(k.slice(0, cut))
        const b = ids.get(k.slice(cut))
        if (a !== undefined && b !== undefined) merges.set(a * V + b, id)
      }
    })
    this.merges = merges
    this.spaceId = ids.get(" ") ?? -1
  }

  /** Reads a llama2.c tokenizer file, failing with the file and the entry that is wrong. */
  static fromFile(file: string): Llama2cTokenizer {
    let buf: Buffer
    try {
      buf = fs.readFileSync(file)
    } catch (e) {
      throw new StepError({ message: `cannot read tokenizer ${file}: ${(e as Error).message}`, file })
    }
    return Llama2cTokenizer.fromBytes(buf, file)
  }

  static fromBytes(buf: Uint8Array, file = "<bytes>"): Llama2cTokenizer {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    const fail = (message: string, field?: string): never => {
      throw new StepError({
        message: `${file} is not a llama2.c tokenizer: ${message}`,
        file,
        ...(field ? { field } : {}),
      })
    }
    if (buf.byteLength < 4) fail("shorter than its 4-byte header", "max_token_length")
    const maxTokenLength = view.getInt32(0, true)
    if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
      fail(`max token length ${maxTokenLength} is out of range`, "max_token_length")
    }
    const pieces: Uint8Array[] = []
    const scores: number[] = []
    let o = 4
    while (o < buf.byteLength) {
      const i = pieces.length
      if (o + 8 > buf.byteLength) fail(`token ${i} at byte ${o} is cut short`, `token[${i}]`)
      const score = view.getFloat32(o, true)
      const len = view.getInt32(o + 4, true)
      if (len < 0 || len > maxTokenLength || o + 8 + len > buf.byteLength) {
        fail(
          `token ${i} at byte ${o} has length ${len} (max ${maxTokenLength}, ${buf.byteLength - o - 8} bytes left)`,
          `token[${i}]`,
        )
      }
      pieces.push(buf.slice(o + 8, o + 8 + len))
      scores.push(score)
      o += 8 + len
    }
    if (pieces.length < 3 + 256)
      fail(`only ${pieces.length} tokens; expected <unk>, BOS, EOS and 256 byte pieces`)
    return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxTokenLength)
  }

  /** The piece of `id` as stored in the vocabulary. */
  pieceText(id: number): string {
    const p = this.pieceBytes[id]
    if (p === undefined)
      throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`)
    return Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("utf8")
  }

  /** Looks a piece up by its text (as llama2.c's str_lookup), or -1. */
  lookup(piece: string): number {
    return this.ids.get(Buffer.from(piece, "utf8").toString("latin1")) ?? -1
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const bytes = Buffer.from(text, "utf8")
    const tokens: number[] = []
    if (options.bos) tokens.push(this.bosId)
    if (bytes.length > 0 && options.dummyPrefix !== false) {
      tokens.push(this.spaceId >= 0 ? this.spaceId : 0x20 + BYTE_FALLBACK_OFFSET)
    }
    this.pushCodepoints(bytes, tokens)
    const merged = this.merge(tokens)
    if (options.eos) merged.push(this.eosId)
    return merged
  }

  /** Splits UTF-8 into codepoints as run.c does (at most 4 bytes each), piece or byte fallback. */
  private pushCodepoints(bytes: Uint8Array, out: number[]): void {
    const n = bytes.length
    let i = 0
    while (i < n) {
      const b = bytes[i]!
      if (b < 0x80 && (i + 1 >= n || (bytes[i + 1]! & 0xc0) !== 0x80)) {
        const id = this.singleByte[b]!
        out.push(id >= 0 ? id : b + BYTE_FALLBACK_OFFSET)
        i++
        continue
      }
      let j = i + 1
      while (j < n && j - i < 4 && (bytes[j]! & 0xc0) === 0x80) j++
      const key = Buffer.from(bytes.buffer, bytes.byteOffset + i, j - i).toString("latin1")
      const id = this.ids.get(key)
      if (id !== undefined) out.push(id)
      else for (let k = i; k < j; k++) out.push(bytes[k]! + BYTE_FALLBACK_OFFSET)
      i = j
    }
  }

  /** Applies the best merge until none is left, over a linked list with a lazy max-heap of candidates. */
  private merge(tokens: number[]): number[] {
    const n = tokens.length
    if (n < 2) return tokens
    const V = this.vocabSize
    const ids = Int32Array.from(tokens)
    const next = new Int32Array(n)
    const prev = new Int32Array(n)
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1
      prev[i] = i - 1
    }
    const heap = new CandidateHeap(3 * n)
    const push = (left: number, right: number) => {
      const id = this.merges.get(ids[left]! * V + ids[right]!)
      if (id === undefined) return
      const score = this.scores[id]!
      if (score > NO_SCORE) heap.push(score, left, right, id)
    }
    for (let i = 0; i + 1 < n; i++) push(i, i + 1)
    while (heap.size > 0) {
      const left = heap.topLeft()
      const right = heap.topRight()
      const id = heap.topId()
      heap.pop()
      // Stale when either side has merged since: the pair is gone or its ids changed.
      if (ids[left]! < 0 || next[left] !== right || ids[right]! < 0) continue
      if (this.merges.get(ids[left]! * V + ids[right]!) !== id) continue
      ids[left] = id
      ids[right] = -1
      const after = next[right]!
      next[left] = after
      if (after >= 0) prev[after] = left
      if (prev[left]! >= 0) push(prev[left]!, left)
      if (after >= 0) push(left, after)
    }
    const out: number[] = []
    for (let i = 0; i >= 0; i = next[i]!) out.push(ids[i]!)
    return out
  }

  /** The bytes llama2.c prints for `id` after `prevId`: no leading space after BOS, raw byte for `<0xNN>`. */
  piece(id: number, prevId: number): Uint8Array {
    const p = this.pieceBytes[id]
    if (p === undefined)
      throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`)
    const byte = this.byteValue[id]!
    if (byte >= 0) return Uint8Array.of(byte)
    if (prevId === this.bosId && p[0] === 0x20) return p.subarray(1)
    return p
  }

  /** Decodes a sequence as if it followed BOS, so decode(encode(text)) gives text back. */
  decode(ids: ReadonlyArray<number> | Uint32Array | Int32Array, options: DecodeOptions = {}): string {
    const skip = options.skipSpecial ?? true
    const parts: Uint8Array[] = []
    let prev = this.bosId
    for (const id of ids) {
      if (!(skip && (id === this.bosId || id === this.eosId))) parts.push(this.piece(id, prev))
      prev = id
    }
    return Buffer.concat(parts).toString("utf8")
  }
}

/**
 * Max-heap of merge candidates ordered by score, then by the left node's
 * position (nodes keep their original index, which preserves sequence order).
 */
class CandidateHeap {
  private score: Float64Array
  private left: Int32Array
  private right: Int32Array
  private id: Int32Array
  size = 0

  constructor(capacity: number) {
    const c = Math.max(4, capacity)
    this.score = new Float64Array(c)
    this.left = new Int32Array(c)
    this.right = new Int32Array(c)
    this.id = new Int32Array(c)
  }

  private before(a: number, b: number): boolean {
    const sa = this.score[a]!
    const sb = this.score[b]!
    return sa > sb || (sa === sb && this.left[a]! < this.left[b]!)
  }

  private swap(a: number, b: number): void {
    const s = this.score[a]!
    this.score[a] = this.score[b]!
    this.score[b] = s
    const l = this.left[a]!
    this.left[a] = this.left[b]!
    this.left[b] = l
    const r = this.right[a]!
    this.right[a] = this.right[b]!
    this.right[b] = r
    const i = this.id[a]!
    this.id[a] = this.id[b]!
    this.id[b] = i
  }

  private grow(): void {
    const c = this.score.length * 2
    const grow = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(c)
      b.set(a)
      return b
    }
    this.score = grow(this.score, (n) => new Float64Array(n))
    this.left = grow(this.left, (n) => new Int32Array(n))
    this.right = grow(this.right, (n) => new Int32Array(n))
    this.id = grow(this.id, (n) => new Int32Array(n))
  }

  push(score: number, left: number, right: number, id: number): void {
    if (this.size === this.score.length) this.grow()
    let i = this.size++
    this.score[i] = score
    this.left[i] = left
    this.right[i] = right
    this.id[i] = id
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(i, parent)) break
      this.swap(i, parent)
      i = parent
    }
  }

  topLeft(): number {
    return this.left[0]!
  }
  topRight(): number {
    return this.right[0]!
  }
  topId(): number {
    return this.id[0]!
  }

  pop(): void {
    const last = --this.size
    if (last === 0) return
    this.swap(0, last)
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let best = i
      if (l < last && this.before(l, best)) best = l
      if (r < last && this.before(r, best)) best = r
      if (best === i) return
      this.swap(i, best)
      i = best
    }
  }
}
