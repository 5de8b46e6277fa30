/**
 * Parquet through hyparquet (loaded lazily: it is only needed for Parquet
 * sources), one row group at a time so memory holds one group's rows.
 */
import type { RawSink } from "./Problem.ts"

/** JSON-friendly values: INT64 columns come back as BigInt, timestamps as Date, untyped binary as bytes. */
const plain = (v: unknown): unknown => {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()
  if (v instanceof Date) return v.toISOString()
  if (v instanceof Uint8Array) return Buffer.from(v).toString("utf8")
  if (Array.isArray(v)) return v.map(plain)
  if (v !== null && typeof v === "object") {
    const o: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) o[k] = plain(x)
    return o
  }
  return v
}

export const readParquet = async (
  file: string,
  sink: RawSink,
  signal: AbortSignal,
  onRows: (rows: number, total: number) => void,
): Promise<number> => {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } = await import("hyparquet")
  const buffer = await asyncBufferFromFile(file)
  const metadata = await parquetMetadataAsync(buffer)
  const total = Number(metadata.num_rows)
  let row = 0
  for (const group of metadata.row_groups) {
    signal.throwIfAborted()
    const n = Number(group.num_rows)
    const rows = await parquetReadObjects({ file: buffer, metadata, rowStart: row, rowEnd: row + n })
    for (const r of rows) {
      row++
      sink.record(plain(r), { row, unit: "row" })
    }
    onRows(row, total)
  }
  return row
}
