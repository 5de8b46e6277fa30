/**
 * Which parser reads a file: from the `format` parameter, else from the file
 * name (a `.gz` suffix means gzip), and from magic bytes, which win over a
 * name (gzip data without `.gz`, Parquet without `.parquet`).
 */
import * as fs from "node:fs"
import * as zlib from "node:zlib"

export const Formats = ["jsonl", "json", "csv", "tsv", "parquet", "text"] as const
export type Format = (typeof Formats)[number]

export interface Detected {
  readonly format: Format
  readonly gzip: boolean
}

const BY_EXTENSION: Record<string, Format> = {
  jsonl: "jsonl",
  ndjson: "jsonl",
  jsonlines: "jsonl",
  json: "json",
  csv: "csv",
  tsv: "tsv",
  parquet: "parquet",
  pq: "parquet",
  txt: "text",
  text: "text",
  md: "text",
}

const magic = (file: string): Buffer => {
  const fd = fs.openSync(file, "r")
  try {
    const b = Buffer.alloc(4)
    const n = fs.readSync(fd, b, 0, 4, 0)
    return b.subarray(0, n)
  } finally {
    fs.closeSync(fd)
  }
}

export const isGzip = (head: Uint8Array): boolean => head[0] === 0x1f && head[1] === 0x8b
const isParquet = (head: Uint8Array): boolean =>
  head[0] === 0x50 && head[1] === 0x41 && head[2] === 0x52 && head[3] === 0x31

/** The format of a file, or a message saying why it cannot be told. */
export const detect = (file: string, format: Format | "auto"): Detected | string => {
  const head = magic(file)
  const gzip = isGzip(head)
  let name = file.toLowerCase()
  if (name.endsWith(".gz")) name = name.slice(0, -3)
  if (format !== "auto") return { format, gzip }
  if (isParquet(head)) return { format: "parquet", gzip: false }
  const dot = name.lastIndexOf(".")
  const ext = dot >= 0 && dot > name.lastIndexOf("/") ? name.slice(dot + 1) : ""
  const byName = BY_EXTENSION[ext]
  if (byName !== undefined) return { format: byName, gzip }
  return `cannot tell the format from the name "${file.slice(file.lastIndexOf("/") + 1)}": set format to one of ${Formats.join(", ")}`
}

const CHUNK = 4 * 1024 * 1024

/** The file's bytes, decompressed when gzip, in large chunks. */
export async function* openBytes(file: string, gzip: boolean, signal: AbortSignal): AsyncGenerator<Buffer> {
  if (gzip) {
    const input = fs.createReadStream(file, { highWaterMark: 1024 * 1024 })
    const gunzip = zlib.createGunzip({ chunkSize: 1024 * 1024 })
    input.on("error", (e) => gunzip.destroy(e))
    input.pipe(gunzip)
    try {
      for await (const chunk of gunzip) {
        signal.throwIfAborted()
        yield chunk as Buffer
      }
    } finally {
      input.destroy()
      gunzip.destroy()
    }
    return
  }
  const fh = await fs.promises.open(file, "r")
  try {
    for (;;) {
      signal.throwIfAborted()
      const buf = Buffer.allocUnsafe(CHUNK)
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null)
      if (bytesRead === 0) return
      yield bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead)
    }
  } finally {
    await fh.close()
  }
}
