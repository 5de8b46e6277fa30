import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import {
  floatToBf16,
  floatToHalf,
  halfToFloat,
  readSafetensors,
  readSafetensorsHeader,
  SafetensorsError,
  SafetensorsReader,
  writeSafetensors,
  writeSafetensorsFile,
} from "../../../plugins/train/Safetensors.ts"

/** Builds a file from a header object and a data section, as a malformed writer might. */
const raw = (header: unknown, data: Uint8Array | number = 0, headerLength?: number): Uint8Array => {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header))
  const body = typeof data === "number" ? new Uint8Array(data) : data
  const out = new Uint8Array(8 + json.length + body.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength ?? json.length), true)
  out.set(json, 8)
  out.set(body, 8 + json.length)
  return out
}

const rejects = (bytes: Uint8Array, pattern: RegExp) => {
  expect(() => readSafetensors(bytes)).toThrow(SafetensorsError)
  expect(() => readSafetensors(bytes)).toThrow(pattern)
}

describe("safetensors", () => {
  test("round-trips F32, F16 and BF16 with metadata, and is byte-stable", () => {
    const tensors = new Map([
      ["b.weight", { shape: [2, 3], data: Float32Array.from([1, -2, 0.5, 3.25, -0, 65504]) }],
      ["a.bias", { shape: [3], data: Float32Array.from([0.1, 0.2, 0.3]) }],
    ])
    const bytes = writeSafetensors(tensors, { format: "pt" })
    expect(writeSafetensors(new Map([...tensors].reverse()), { format: "pt" })).toEqual(bytes)
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect(headerLength % 8).toBe(0)
    const back = readSafetensors(bytes)
    expect(back.metadata).toEqual({ format: "pt" })
    expect([...back.tensors.keys()]).toEqual(["a.bias", "b.weight"])
    expect(back.tensors.get("b.weight")?.data).toEqual(tensors.get("b.weight")?.data)
    expect(back.tensors.get("a.bias")?.shape).toEqual([3])

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-"))
    for (const dtype of ["F16", "BF16"] as const) {
      const file = path.join(dir, `${dtype}.safetensors`)
      fs.writeFileSync(file, writeSafetensors(tensors, {}, dtype))
      const r = readSafetensors(file)
      expect(r.dtypes.get("b.weight")).toBe(dtype)
      const w = r.tensors.get("b.weight")?.data as Float32Array
      expect(w[0]).toBe(1)
      expect(w[3]).toBe(3.25)
      expect(Math.abs((w[4] as number) - 0)).toBe(0)
      expect(Math.abs((r.tensors.get("a.bias")?.data[0] as number) - 0.1)).toBeLessThan(
        dtype === "F16" ? 1e-4 : 1e-3,
      )
    }
  })

  test("half and bfloat16 conversions are exact where the formats agree", () => {
    for (const x of [0, 1, -1, 0.5, 2 ** -14, 2 ** -24, 65504, -3.140625])
      expect(halfToFloat(floatToHalf(x))).toBe(x)
    expect(halfToFloat(floatToHalf(1e6))).toBe(Number.POSITIVE_INFINITY)
    expect(Number.isNaN(halfToFloat(floatToHalf(Number.NaN)))).toBe(true)
    // Round to nearest even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
    expect(halfToFloat(floatToHalf(1 + 2 ** -11))).toBe(1)
    expect(floatToBf16(1)).toBe(0x3f80)
    expect(floatToBf16(-2)).toBe(0xc000)
  })

  const entry = (begin: number, end: number, shape = [2], dtype = "F32") => ({
    dtype,
    shape,
    data_offsets: [begin, end],
  })

  test("rejects a file shorter than the header length field", () => {
    rejects(new Uint8Array(5), /shorter than the 8-byte header length/)
  })

  test("rejects a header length beyond the file, or a truncated header", () => {
    rejects(raw({ a: entry(0, 8) }, 8, 10_000), /beyond the end of the file/)
    const whole = raw({ a: entry(0, 8) }, 8)
    rejects(whole.subarray(0, 20), /beyond the end of the file/)
  })

  test("rejects a huge header length without allocating it", () => {
    const b = new Uint8Array(16)
    new DataView(b.buffer).setBigUint64(0, 2n ** 63n, true)
    rejects(b, /beyond the end of the file/)
  })

  test("rejects invalid JSON and non-object headers", () => {
    rejects(raw("{not json", 0), /not valid UTF-8 JSON/)
    rejects(raw("[1,2]", 0), /not a JSON object/)
    rejects(raw({ __metadata__: { a: 1 } }, 0), /__metadata__.a is not a string/)
  })

  test("rejects offsets out of range, overlapping or non-contiguous", () => {
    rejects(raw({ a: entry(0, 16) }, 8), /out of range/)
    rejects(raw({ a: entry(-4, 4) }, 8), /out of range/)
    rejects(raw({ a: entry(0, 8), b: entry(4, 12) }, 12), /overlap/)
    rejects(raw({ a: entry(0, 8), b: entry(12, 20) }, 20), /not contiguous/)
    rejects(raw({ a: entry(0, 8) }, 12), /cover 8 bytes of data but the file holds 12/)
    rejects(raw({ a: entry(8, 0, [0]) }, 8), /end 0 before begin 8/)
  })

  test("rejects unknown dtypes and shape × dtype size mismatches", () => {
    rejects(raw({ a: entry(0, 8, [2], "F128") }, 8), /unknown dtype "F128"/)
    rejects(raw({ a: entry(0, 8, [3]) }, 8), /needs 12 bytes, data_offsets give 8/)
    rejects(raw({ a: entry(0, 8, [2], "F16") }, 8), /needs 4 bytes/)
    rejects(raw({ a: entry(0, 8, [2.5]) }, 8), /shape must be an array of non-negative integers/)
    rejects(raw({ a: entry(0, 8, [2], "I32") }, 8), /dtype I32 is valid but not supported/)
  })

  test("a file read tensor by tensor, and written tensor by tensor, equals its bytes read and written whole", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-stream-"))
    // 2.5M values: F16 and BF16 take more than one 4 MiB buffer; values no dtype holds exactly.
    const big = new Float32Array(2_500_001)
    for (let i = 0; i < big.length; i++) big[i] = Math.sin(i * 0.37) * 3 + 1 / (i + 3)
    const tensors = new Map([
      ["big", { shape: [big.length], data: big }],
      ["small", { shape: [1, 3], data: Float32Array.from([0.1, -65504, 7e-6]) }],
    ])
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const file = path.join(dir, `${dtype}.safetensors`)
      writeSafetensorsFile(file, tensors, { format: "pt" }, dtype)
      const whole = writeSafetensors(tensors, { format: "pt" }, dtype)
      expect(Buffer.compare(fs.readFileSync(file), whole), dtype).toBe(0)
      const fromBytes = readSafetensors(whole)
      const fromFile = readSafetensors(file)
      expect(fromFile.dtypes.get("big")).toBe(dtype)
      for (const name of ["big", "small"])
        expect(
          Buffer.compare(
            Buffer.from(fromFile.tensors.get(name)!.data.buffer),
            Buffer.from(fromBytes.tensors.get(name)!.data.buffer),
          ),
          `${dtype} ${name}`,
        ).toBe(0)
      if (dtype === "F32")
        expect(
          Buffer.compare(Buffer.from(fromFile.tensors.get("big")!.data.buffer), Buffer.from(big.buffer)),
        ).toBe(0)
      const header = readSafetensorsHeader(file)
      expect(header.entries.get("small")).toMatchObject({ dtype, shape: [1, 3] })
    }
  })

  test("a reader names the file: no such file, a short file, an unknown tensor, a read after close", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-reader-"))
    const missing = path.join(dir, "none.safetensors")
    expect(() => SafetensorsReader.open(missing)).toThrow(`${missing}: cannot open (ENOENT)`)
    const file = path.join(dir, "a.safetensors")
    fs.writeFileSync(file, writeSafetensors({ a: { shape: [2], data: Float32Array.from([1, 2]) } }))
    const r = SafetensorsReader.open(file)
    expect(() => r.read("b")).toThrow(`${file}: no tensor b`)
    expect(r.read("a").data).toEqual(Float32Array.from([1, 2]))
    r.close()
    expect(() => r.read("a")).toThrow(`${file}: read after close`)
    const short = path.join(dir, "short.safetensors")
    fs.writeFileSync(short, fs.readFileSync(file).subarray(0, 20))
    expect(() => SafetensorsReader.open(short)).toThrow(
      new RegExp(`^${short}: header length \\d+ is beyond the end of the file`),
    )
  })
})
