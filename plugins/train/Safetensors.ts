/**
 * The safetensors format, read and written by us so that a malformed file is
 * a clear error and never a crash, a hang or a read out of bounds.
 *
 *   u64 LE  N            header length
 *   N bytes JSON header  { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: { str: str } }
 *   bytes   data         tensors back to back; offsets are relative to the start of data
 *
 * The data must be covered exactly: sorted by offset, each tensor starts where
 * the previous one ended, the last one ends at the end of the file, and
 * `end - begin` equals the element count times the dtype size.
 *
 * A file on disk is never read whole: SafetensorsReader reads the header,
 * then each tensor by positioned reads straight into its float32 array
 * (F16 and BF16 through one 4 MiB buffer), and writeSafetensorsFile encodes
 * tensor by tensor the bytes writeSafetensors builds in memory.
 */
import * as fs from "node:fs"

/** A tensor on the host, row-major, always float32 once read. */
export interface HostTensor {
  readonly shape: ReadonlyArray<number>
  readonly data: Float32Array
}

export type SafetensorsDtype = "F32" | "F16" | "BF16"

export class SafetensorsError extends Error {
  override readonly name = "SafetensorsError"
}

/** Byte sizes of every dtype the format defines (we decode the float ones). */
const DTYPE_SIZE: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
}

/** The reference implementation refuses headers over 100 MB; so do we. */
const MAX_HEADER = 100_000_000

export interface SafetensorsFile {
  readonly tensors: Map<string, HostTensor>
  readonly metadata: Record<string, string>
  /** The dtype each tensor had on disk. */
  readonly dtypes: Map<string, SafetensorsDtype>
}

/** One tensor as the header describes it; `begin` and `end` are absolute byte offsets in the file. */
export interface TensorEntry {
  readonly name: string
  readonly dtype: string
  readonly shape: ReadonlyArray<number>
  readonly begin: number
  readonly end: number
}

/** A file's checked header: what it holds and where, with no tensor data read yet. */
export interface SafetensorsHeader {
  readonly where: string
  readonly metadata: Record<string, string>
  /** Sorted by name. */
  readonly entries: ReadonlyMap<string, TensorEntry>
}

const fail = (where: string, message: string): never => {
  throw new SafetensorsError(`${where}: ${message}`)
}

const isIntIn = (v: unknown, max: number): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= max

/** The header length from the first 8 bytes, checked against the file length. */
const headerLengthOf = (first8: Uint8Array, fileLength: number, where: string): number => {
  if (fileLength < 8) fail(where, `file is ${fileLength} bytes, shorter than the 8-byte header length`)
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(fileLength - 8))
    fail(where, `header length ${n} is beyond the end of the file (${fileLength} bytes)`)
  if (n > BigInt(MAX_HEADER)) fail(where, `header length ${n} is over the ${MAX_HEADER}-byte limit`)
  const headerLength = Number(n)
  if (headerLength < 2) fail(where, `header length ${headerLength} is too short for a JSON object`)
  return headerLength
}

/** Parses and checks the JSON header: every entry valid, the data covered exactly. */
const parseHeader = (json: Uint8Array, fileLength: number, where: string): SafetensorsHeader => {
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json))
  } catch (e) {
    fail(where, `header is not valid UTF-8 JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    fail(where, "header is not a JSON object")
  const dataStart = 8 + json.length
  const dataLength = fileLength - dataStart
  const metadata: Record<string, string> = {}
  const entries: TensorEntry[] = []
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value))
        fail(where, "__metadata__ is not an object of strings")
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") fail(where, `__metadata__.${k} is not a string`)
        metadata[k] = v as string
      }
      continue
    }
    const t = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
    if (typeof t !== "object" || t === null) fail(where, `tensor ${name}: entry is not an object`)
    if (typeof t.dtype !== "string" || !(t.dtype in DTYPE_SIZE))
      fail(where, `tensor ${name}: unknown dtype ${JSON.stringify(t.dtype)}`)
    if (!Array.isArray(t.shape) || !t.shape.every((d) => isIntIn(d, Number.MAX_SAFE_INTEGER)))
      fail(where, `tensor ${name}: shape must be an array of non-negative integers`)
    const off = t.data_offsets
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !isIntIn(off[0], dataLength) ||
      !isIntIn(off[1], dataLength)
    )
      fail(
        where,
        `tensor ${name}: data_offsets ${JSON.stringify(off)} out of range (data is ${dataLength} bytes)`,
      )
    const [begin, end] = off as [number, number]
    if (end < begin) fail(where, `tensor ${name}: data_offsets end ${end} before begin ${begin}`)
    const shape = t.shape as number[]
    let count = 1
    for (const d of shape) count *= d
    const size = DTYPE_SIZE[t.dtype as string] as number
    if (count * size !== end - begin)
      fail(
        where,
        `tensor ${name}: shape [${shape.join(", ")}] × ${t.dtype} (${size} bytes) needs ${count * size} bytes, data_offsets give ${end - begin}`,
      )
    entries.push({ name, dtype: t.dtype as string, shape, begin: dataStart + begin, end: dataStart + end })
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end)
  let cursor = dataStart
  for (const e of entries) {
    const rel = `[${e.begin - dataStart}, ${e.end - dataStart}]`
    if (e.begin < cursor) fail(where, `tensor ${e.name}: data_offsets ${rel} overlap the previous tensor`)
    if (e.begin > cursor)
      fail(
        where,
        `tensor ${e.name}: data is not contiguous (gap at bytes ${cursor - dataStart}..${e.begin - dataStart})`,
      )
    cursor = e.end
  }
  if (cursor !== fileLength)
    fail(where, `tensors cover ${cursor - dataStart} bytes of data but the file holds ${dataLength}`)
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  return { where, metadata, entries: new Map(entries.map((e) => [e.name, e])) }
}

const isFloat = (dtype: string): dtype is SafetensorsDtype =>
  dtype === "F32" || dtype === "F16" || dtype === "BF16"

/** Bytes converted per read for F16 and BF16: the only buffer a read needs beside its float32 result. */
const CHUNK = 4 * 1024 * 1024
let scratch: Uint8Array | undefined

/** float32 of every half: a table lookup converts F16 as fast as a shift converts BF16. */
let halfTable: Float32Array | undefined
const halves = (): Float32Array => {
  if (halfTable === undefined) {
    halfTable = new Float32Array(65536)
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h)
  }
  return halfTable
}

/** Converts little-endian F16 or BF16 bytes (even offset, even length) into `out` from `at`. */
const convertInto = (raw: Uint8Array, dtype: "F16" | "BF16", out: Float32Array, at: number) => {
  const n = raw.length >> 1
  const u16 =
    raw.byteOffset % 2 === 0
      ? new Uint16Array(raw.buffer, raw.byteOffset, n)
      : new Uint16Array(Uint8Array.from(raw).buffer)
  if (dtype === "BF16") {
    const u32 = new Uint32Array(out.buffer, out.byteOffset + at * 4, n)
    for (let i = 0; i < n; i++) u32[i] = (u16[i] as number) << 16
  } else {
    const table = halves()
    for (let i = 0; i < n; i++) out[at + i] = table[u16[i] as number] as number
  }
}

/**
 * A safetensors file opened for reading one tensor at a time with positioned
 * reads: only the header is read up front, and each tensor goes from disk
 * straight into its float32 array (F16 and BF16 through one 4 MiB buffer),
 * so a multi-GB file is never held in memory whole.
 */
export class SafetensorsReader {
  private fd: number | undefined

  private constructor(
    readonly file: string,
    fd: number,
    readonly header: SafetensorsHeader,
  ) {
    this.fd = fd
  }

  static open(file: string): SafetensorsReader {
    let fd: number
    try {
      fd = fs.openSync(file, "r")
    } catch (e) {
      throw new SafetensorsError(
        `${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      )
    }
    try {
      const size = fs.fstatSync(fd).size
      const first = new Uint8Array(8)
      readFully(fd, first, 0, file)
      const headerLength = headerLengthOf(first, size, file)
      const json = new Uint8Array(headerLength)
      readFully(fd, json, 8, file)
      return new SafetensorsReader(file, fd, parseHeader(json, size, file))
    } catch (e) {
      fs.closeSync(fd)
      throw e
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata
  }

  get names(): ReadonlyArray<string> {
    return [...this.header.entries.keys()]
  }

  entry(name: string): TensorEntry | undefined {
    return this.header.entries.get(name)
  }

  /** Reads one tensor as float32 (into `into` when given: it must hold exactly its elements). */
  read(name: string, into?: Float32Array): HostTensor {
    const fd = this.fd
    if (fd === undefined) throw new SafetensorsError(`${this.file}: read after close`)
    const e = this.header.entries.get(name)
    if (e === undefined) throw new SafetensorsError(`${this.file}: no tensor ${name}`)
    if (!isFloat(e.dtype))
      fail(this.file, `tensor ${name}: dtype ${e.dtype} is valid but not supported (F32, F16, BF16)`)
    const count = e.shape.reduce((a, b) => a * b, 1)
    const out = into ?? new Float32Array(count)
    if (out.length !== count)
      throw new SafetensorsError(
        `${this.file}: tensor ${name} holds ${count} values, the destination ${out.length}`,
      )
    if (e.dtype === "F32") {
      readFully(fd, new Uint8Array(out.buffer, out.byteOffset, count * 4), e.begin, this.file)
      return { shape: e.shape, data: out }
    }
    scratch ??= new Uint8Array(CHUNK)
    for (let pos = e.begin, at = 0; pos < e.end; ) {
      const n = Math.min(CHUNK, e.end - pos)
      const chunk = scratch.subarray(0, n)
      readFully(fd, chunk, pos, this.file)
      convertInto(chunk, e.dtype as "F16" | "BF16", out, at)
      pos += n
      at += n >> 1
    }
    return { shape: e.shape, data: out }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
  }
}

/** Fills `buf` from `position`; a short file is an error naming it. */
const readFully = (fd: number, buf: Uint8Array, position: number, file: string) => {
  let done = 0
  while (done < buf.length) {
    // One read returns at most about 2 GiB.
    const n = fs.readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), position + done)
    if (n === 0)
      fail(
        file,
        `file ended at byte ${position + done} while reading bytes ${position}..${position + buf.length}`,
      )
    done += n
  }
}

/** Reads the header only: names, dtypes, shapes and offsets, no tensor data. */
export const readSafetensorsHeader = (file: string): SafetensorsHeader => {
  const r = SafetensorsReader.open(file)
  r.close()
  return r.header
}

/** Reads a safetensors file (a path or its bytes); every tensor comes back as float32. */
export const readSafetensors = (source: string | Uint8Array): SafetensorsFile => {
  if (typeof source === "string") {
    const r = SafetensorsReader.open(source)
    try {
      const tensors = new Map<string, HostTensor>()
      const dtypes = new Map<string, SafetensorsDtype>()
      for (const [name, e] of r.header.entries) {
        tensors.set(name, r.read(name))
        dtypes.set(name, e.dtype as SafetensorsDtype)
      }
      return { tensors, metadata: r.metadata, dtypes }
    } finally {
      r.close()
    }
  }
  const where = "safetensors"
  const bytes = source
  const headerLength = headerLengthOf(bytes, bytes.length, where)
  const header = parseHeader(bytes.subarray(8, 8 + headerLength), bytes.length, where)
  const tensors = new Map<string, HostTensor>()
  const dtypes = new Map<string, SafetensorsDtype>()
  for (const [name, e] of header.entries) {
    if (!isFloat(e.dtype))
      fail(where, `tensor ${name}: dtype ${e.dtype} is valid but not supported (F32, F16, BF16)`)
    const raw = bytes.subarray(e.begin, e.end)
    const out = new Float32Array(raw.length / DTYPE_SIZE[e.dtype]!)
    if (e.dtype === "F32") new Uint8Array(out.buffer).set(raw)
    else convertInto(raw, e.dtype as "F16" | "BF16", out, 0)
    tensors.set(name, { shape: e.shape, data: out })
    dtypes.set(name, e.dtype as SafetensorsDtype)
  }
  return { tensors, metadata: header.metadata, dtypes }
}

export const halfToFloat = (h: number): number => {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >> 10) & 0x1f
  const frac = h & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 0x1f) return frac === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN
  return sign * (1 + frac / 1024) * 2 ** (exp - 15)
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 to IEEE half, round to nearest even. */
export const floatToHalf = (x: number): number => {
  f32[0] = x
  const b = u32[0] as number
  const sign = (b >>> 16) & 0x8000
  const exp = (b >>> 23) & 0xff
  let mant = b & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0)
  let e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    const half = 1 << (shift - 1)
    let m = mant >>> shift
    const rest = mant & ((1 << shift) - 1)
    if (rest > half || (rest === half && m & 1)) m++
    return sign | m
  }
  let m = mant >>> 13
  const rest = mant & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++
    if (m === 0x400) {
      m = 0
      e++
      if (e >= 0x1f) return sign | 0x7c00
    }
  }
  return sign | (e << 10) | m
}

/** float32 to bfloat16, round to nearest even (NaN stays NaN). */
export const floatToBf16 = (x: number): number => {
  f32[0] = x
  const b = u32[0] as number
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff
}

/** The header bytes (padded with spaces to 8 bytes) and the data length, for tensors in name order. */
const layout = (
  map: ReadonlyMap<string, HostTensor>,
  metadata: Record<string, string>,
  dtype: SafetensorsDtype,
): { names: string[]; json: Buffer; dataLength: number } => {
  const names = [...map.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const size = DTYPE_SIZE[dtype] as number
  const header: Record<string, unknown> = {}
  const metaKeys = Object.keys(metadata).sort()
  if (metaKeys.length > 0) header.__metadata__ = Object.fromEntries(metaKeys.map((k) => [k, metadata[k]]))
  let offset = 0
  for (const name of names) {
    const t = map.get(name) as HostTensor
    const count = t.shape.reduce((a, b) => a * b, 1)
    if (count !== t.data.length)
      throw new SafetensorsError(
        `tensor ${name}: shape [${t.shape.join(", ")}] does not match ${t.data.length} values`,
      )
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + count * size] }
    offset += count * size
  }
  let json = Buffer.from(JSON.stringify(header), "utf-8")
  const pad = (8 - (json.length % 8)) % 8
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)])
  return { names, json, dataLength: offset }
}

/** Encodes float32 values as `dtype` into `out` (little-endian), which holds exactly their bytes. */
const encodeInto = (data: Float32Array, dtype: SafetensorsDtype, out: Uint8Array) => {
  if (dtype === "F32") {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.length * 4))
    return
  }
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  const encode = dtype === "F16" ? floatToHalf : floatToBf16
  for (let i = 0; i < data.length; i++) view.setUint16(i * 2, encode(data[i] as number), true)
}

const asMap = (tensors: ReadonlyMap<string, HostTensor> | Record<string, HostTensor>) =>
  tensors instanceof Map ? tensors : new Map(Object.entries(tensors))

/**
 * Writes tensors in safetensors layout: keys sorted, data in name order, the
 * header padded with spaces to 8 bytes as the reference writer does, so the
 * same tensors always give the same bytes.
 */
export const writeSafetensors = (
  tensors: ReadonlyMap<string, HostTensor> | Record<string, HostTensor>,
  metadata: Record<string, string> = {},
  dtype: SafetensorsDtype = "F32",
): Uint8Array => {
  const map = asMap(tensors)
  const { names, json, dataLength } = layout(map, metadata, dtype)
  const out = new Uint8Array(8 + json.length + dataLength)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  let at = 8 + json.length
  for (const name of names) {
    const data = (map.get(name) as HostTensor).data
    const bytes = data.length * (DTYPE_SIZE[dtype] as number)
    encodeInto(data, dtype, out.subarray(at, at + bytes))
    at += bytes
  }
  return out
}

/**
 * The same bytes as writeSafetensors, written to `file` one tensor at a time
 * (through a 4 MiB buffer), so a large model is never encoded whole in memory.
 */
export const writeSafetensorsFile = (
  file: string,
  tensors: ReadonlyMap<string, HostTensor> | Record<string, HostTensor>,
  metadata: Record<string, string> = {},
  dtype: SafetensorsDtype = "F32",
): void => {
  const map = asMap(tensors)
  const { names, json } = layout(map, metadata, dtype)
  const size = DTYPE_SIZE[dtype] as number
  const fd = fs.openSync(file, "w")
  try {
    const first = new Uint8Array(8)
    new DataView(first.buffer).setBigUint64(0, BigInt(json.length), true)
    writeFully(fd, first)
    writeFully(fd, json)
    const buf = new Uint8Array(CHUNK)
    const per = CHUNK / 4
    for (const name of names) {
      const data = (map.get(name) as HostTensor).data
      for (let i = 0; i < data.length; i += per) {
        const part = data.subarray(i, Math.min(data.length, i + per))
        const out = buf.subarray(0, part.length * size)
        encodeInto(part, dtype, out)
        writeFully(fd, out)
      }
    }
  } finally {
    fs.closeSync(fd)
  }
}

const writeFully = (fd: number, buf: Uint8Array) => {
  for (let done = 0; done < buf.length; ) done += fs.writeSync(fd, buf, done, buf.length - done)
}
