/**
 * Bytes to text, a line at a time. Chunks are cut after their last line
 * break (a newline is never part of a multi-byte character, so each segment
 * decodes on its own), checked as UTF-8 in one pass, and decoded in one call.
 * Lines with invalid UTF-8 are decoded lossily and listed, so a parser can
 * fail or skip the records they belong to.
 */
import { isUtf8 } from "node:buffer"
import { SourceError } from "./Problem.ts"

export interface BadLine {
  readonly line: number
  /** Byte offset of the first invalid sequence within the line. */
  readonly byte: number
}

export type SegmentHandler = (text: string, firstLine: number, bad: ReadonlyArray<BadLine>) => void
/** Takes the segment's bytes instead of its text (checked as UTF-8 all the same). */
export type BytesHandler = (bytes: Buffer, firstLine: number, bad: ReadonlyArray<BadLine>) => void

const NONE: ReadonlyArray<BadLine> = []

/** Offset of the first invalid UTF-8 sequence in buf[start, end), or -1. */
export const firstInvalidUtf8 = (buf: Uint8Array, start: number, end: number): number => {
  let i = start
  while (i < end) {
    const b = buf[i]!
    if (b < 0x80) {
      i++
      continue
    }
    let n: number
    let min: number
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1
      min = 0x80
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2
      min = 0x800
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3
      min = 0x10000
    } else return i - start
    if (i + n >= end) return i - start
    let cp = b & (0x3f >> n)
    for (let k = 1; k <= n; k++) {
      const c = buf[i + k]
      if (c === undefined || (c & 0xc0) !== 0x80) return i - start
      cp = (cp << 6) | (c & 0x3f)
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i - start
    i += n + 1
  }
  return -1
}

export class Utf8Lines {
  private carry: Buffer[] = []
  private carryBytes = 0
  private line = 1
  private started = false
  /** Bytes seen so far, for progress. */
  bytes = 0

  constructor(
    private readonly onSegment: SegmentHandler,
    private readonly maxLineBytes: number,
    private readonly onBytes?: BytesHandler,
    /** False for bytes from the middle of a file (a chunk after the first): no BOM is looked for. */
    atFileStart = true,
  ) {
    this.started = !atFileStart
  }

  push(chunk: Buffer): void {
    this.bytes += chunk.length
    let buf = chunk
    if (!this.started) {
      if (this.carryBytes + buf.length < 3 && buf.length > 0) {
        this.carry.push(buf)
        this.carryBytes += buf.length
        return
      }
      this.started = true
      if (this.carry.length > 0) {
        buf = Buffer.concat([...this.carry, buf])
        this.carry = []
        this.carryBytes = 0
      }
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3)
    }
    const last = buf.lastIndexOf(10)
    if (last < 0) {
      this.carry.push(buf)
      this.carryBytes += buf.length
      this.checkLength()
      return
    }
    let seg = buf.subarray(0, last + 1)
    if (this.carry.length > 0) {
      seg = Buffer.concat([...this.carry, seg])
      this.carry = []
      this.carryBytes = 0
    }
    this.emit(seg)
    if (last + 1 < buf.length) {
      // copy the tail so the (large) chunk it came from can be collected
      const tail = Buffer.from(buf.subarray(last + 1))
      this.carry.push(tail)
      this.carryBytes = tail.length
      this.checkLength()
    }
  }

  end(): void {
    if (!this.started && this.carry.length > 0) {
      this.started = true
      let buf = Buffer.concat(this.carry)
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3)
      this.carry = [buf]
    }
    if (this.carry.length > 0) {
      const seg = Buffer.concat(this.carry)
      this.carry = []
      this.carryBytes = 0
      if (seg.length > 0) this.emit(seg)
    }
  }

  private checkLength(): void {
    if (this.carryBytes > this.maxLineBytes)
      throw new SourceError(
        { line: this.line },
        {
          message: `line is longer than maxLineBytes (${this.maxLineBytes} bytes) and has no line break yet: not a line-based file, or raise maxLineBytes`,
        },
      )
  }

  private emit(seg: Buffer): void {
    const first = this.line
    let lines = 0
    let p = seg.indexOf(10)
    while (p >= 0) {
      lines++
      p = seg.indexOf(10, p + 1)
    }
    this.line += lines
    if (isUtf8(seg)) {
      if (this.onBytes !== undefined) this.onBytes(seg, first, NONE)
      else this.onSegment(seg.toString("utf8"), first, NONE)
      return
    }
    const bad: BadLine[] = []
    let start = 0
    let line = first
    while (start < seg.length) {
      let nl = seg.indexOf(10, start)
      if (nl < 0) nl = seg.length
      const off = firstInvalidUtf8(seg, start, nl)
      if (off >= 0) bad.push({ line, byte: off })
      start = nl + 1
      line++
    }
    if (this.onBytes !== undefined) this.onBytes(seg, first, bad)
    else this.onSegment(seg.toString("utf8"), first, bad)
  }
}

/** The problem text for a line with invalid UTF-8. */
export const badUtf8Message = (b: BadLine): string =>
  `invalid UTF-8 at byte ${b.byte} of the line (re-encode the file as UTF-8)`
