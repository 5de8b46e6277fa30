/**
 * Writes a Records file incrementally: lines are gathered into ~1 MiB
 * batches and written with one call each, so output never accumulates in
 * memory whatever the input size.
 */
import * as fs from "node:fs"

const BATCH = 1024 * 1024

export class RecordWriter {
  count = 0
  bytes = 0
  private readonly fd: number
  private parts: string[] = []
  private pending = 0
  private buf = Buffer.allocUnsafe(4 * BATCH)
  private used = 0

  constructor(readonly path: string) {
    this.fd = fs.openSync(path, "w")
  }

  /** One canonical line (without its newline). */
  line(s: string): void {
    if (this.used > 0) this.flushBytes()
    this.parts.push(s, "\n")
    this.pending += s.length + 1
    this.count++
    if (this.pending >= BATCH) this.flushText()
  }

  /** One line given as bytes (without its newline), copied at once. */
  lineBytes(src: Uint8Array, start: number, end: number): void {
    if (this.pending > 0) this.flushText()
    const n = end - start + 1
    if (this.used + n > this.buf.length) {
      this.flushBytes()
      if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n * 2)
    }
    if (n < 96) for (let i = start, o = this.used; i < end; i++, o++) this.buf[o] = src[i]!
    else this.buf.set(src.subarray(start, end), this.used)
    this.buf[this.used + n - 1] = 10
    this.used += n
    this.count++
  }

  close(): void {
    try {
      this.flushText()
      this.flushBytes()
    } finally {
      fs.closeSync(this.fd)
    }
  }

  private flushText(): void {
    if (this.pending === 0) return
    const b = Buffer.from(this.parts.join(""), "utf8")
    let off = 0
    while (off < b.length) off += fs.writeSync(this.fd, b, off, b.length - off)
    this.bytes += b.length
    this.parts = []
    this.pending = 0
  }

  private flushBytes(): void {
    if (this.used === 0) return
    let off = 0
    while (off < this.used) off += fs.writeSync(this.fd, this.buf, off, this.used - off)
    this.bytes += this.used
    this.used = 0
  }
}
