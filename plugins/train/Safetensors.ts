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

const fail = (where: string, message: string): never => {
  throw new SafetensorsError(`${where}: ${message}`)
}

const isIntIn = (v: unknown, max: number): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= max

/** Reads a safetensors file (a path or its bytes); every tensor comes back as float32. */
export const readSafetensors = (source: string | Uint8Array): SafetensorsFile => {
  const where = typeof source === "string" ? source : "safetensors"
  const bytes = typeof source === "string" ? fs.readFileSync(source) : source
  if (bytes.length < 8) fail(where, `file is ${bytes.length} bytes, shorter than the 8-byte header length`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const n = view.getBigUint64(0, true)
  if (n > BigInt(bytes.length - 8))
    fail(where, `header length ${n} is beyond the end of the file (${bytes.length} bytes)`)
  if (n > BigInt(MAX_HEADER)) fail(where, `header length ${n} is over the ${MAX_HEADER}-byte limit`)
  const headerLength = Number(n)
  if (headerLength < 2) fail(where, `header length ${headerLength} is too short for a JSON object`)
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)))
  } catch (e) {
    fail(where, `header is not valid UTF-8 JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    fail(where, "header is not a JSON object")
  const dataStart = 8 + headerLength
  const dataLength = bytes.length - dataStart
  const metadata: Record<string, string> = {}
  const entries: Array<{ name: string; dtype: string; shape: number[]; begin: number; end: number }> = []
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
    entries.push({ name, dtype: t.dtype as string, shape, begin, end })
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end)
  let cursor = 0
  for (const e of entries) {
    if (e.begin < cursor)
      fail(where, `tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] overlap the previous tensor`)
    if (e.begin > cursor)
      fail(where, `tensor ${e.name}: data is not contiguous (gap at bytes ${cursor}..${e.begin})`)
    cursor = e.end
  }
  if (cursor !== dataLength)
    fail(where, `tensors cover ${cursor} bytes of data but the file holds ${dataLength}`)
  const tensors = new Map<string, HostTensor>()
  const dtypes = new Map<string, SafetensorsDtype>()
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (e.dtype !== "F32" && e.dtype !== "F16" && e.dtype !== "BF16")
      fail(where, `tensor ${e.name}: dtype ${e.dtype} is valid but not supported (F32, F16, BF16)`)
    const raw = bytes.subarray(dataStart + e.begin, dataStart + e.end)
    tensors.set(e.name, { shape: e.shape, data: decode(raw, e.dtype as SafetensorsDtype) })
    dtypes.set(e.name, e.dtype as SafetensorsDtype)
  }
  return { tensors, metadata, dtypes }
}

const decode = (raw: Uint8Array, dtype: SafetensorsDtype): Float32Array => {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  // A copy starts at offset 0, so it is aligned for a float32 view (hosts are little-endian).
  // (Not raw.slice(): on a Node Buffer that is a view, not a copy.)
  if (dtype === "F32") {
    const copy = new Uint8Array(raw.length)
    copy.set(raw)
    return new Float32Array(copy.buffer)
  }
  const out = new Float32Array(raw.length / 2)
  if (dtype === "BF16") {
    const u = new Uint32Array(out.buffer)
    for (let i = 0; i < out.length; i++) u[i] = v.getUint16(i * 2, true) << 16
  } else {
    for (let i = 0; i < out.length; i++) out[i] = halfToFloat(v.getUint16(i * 2, true))
  }
  return out
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
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors))
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
  const out = new Uint8Array(8 + json.length + offset)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  let at = 8 + json.length
  for (const name of names) {
    const data = (map.get(name) as HostTensor).data
    if (dtype === "F32") {
      // The header is padded to 8 bytes, so float32 data is aligned.
      new Float32Array(out.buffer, at, data.length).set(data)
      at += data.length * 4
      continue
    }
    for (let i = 0; i < data.length; i++, at += size) {
      const x = data[i] as number
      view.setUint16(at, dtype === "F16" ? floatToHalf(x) : floatToBf16(x), true)
    }
  }
  return out
}
