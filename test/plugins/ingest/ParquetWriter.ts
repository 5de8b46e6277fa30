/**
 * A minimal Parquet writer for test fixtures (hyparquet only reads): REQUIRED
 * UTF-8 string and INT64 columns, PLAIN encoding, uncompressed, data page v1,
 * one page per column chunk, several row groups. Thrift compact protocol for
 * the page headers and the footer.
 */
import * as fs from "node:fs"

class Thrift {
  bytes: number[] = []
  private last: number[] = [0]

  varint(n: bigint | number): void {
    let v = BigInt(n)
    while (v >= 0x80n) {
      this.bytes.push(Number(v & 0x7fn) | 0x80)
      v >>= 7n
    }
    this.bytes.push(Number(v))
  }
  zigzag(n: number | bigint): void {
    const v = BigInt(n)
    this.varint(v >= 0n ? v << 1n : (-v << 1n) - 1n)
  }
  field(id: number, type: number): void {
    const delta = id - this.last[this.last.length - 1]!
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type)
    else {
      this.bytes.push(type)
      this.zigzag(id)
    }
    this.last[this.last.length - 1] = id
  }
  i32(id: number, v: number): void {
    this.field(id, 5)
    this.zigzag(v)
  }
  i64(id: number, v: number | bigint): void {
    this.field(id, 6)
    this.zigzag(v)
  }
  string(id: number, s: string): void {
    this.field(id, 8)
    const b = Buffer.from(s)
    this.varint(b.length)
    this.bytes.push(...b)
  }
  struct(id: number, body: () => void): void {
    this.field(id, 12)
    this.begin(body)
  }
  begin(body: () => void): void {
    this.last.push(0)
    body()
    this.bytes.push(0)
    this.last.pop()
  }
  list(id: number, elemType: number, items: ReadonlyArray<() => void>): void {
    this.field(id, 9)
    if (items.length < 15) this.bytes.push((items.length << 4) | elemType)
    else {
      this.bytes.push(0xf0 | elemType)
      this.varint(items.length)
    }
    for (const item of items) item()
  }
}

export type Column =
  | { readonly name: string; readonly type: "string" }
  | { readonly name: string; readonly type: "int64" }

export const writeParquet = (
  file: string,
  columns: ReadonlyArray<Column>,
  rows: ReadonlyArray<Record<string, string | number>>,
  rowGroupSize = 2,
): void => {
  const chunks: Buffer[] = [Buffer.from("PAR1")]
  let offset = 4
  const groups: {
    columns: { offset: number; size: number; name: string; type: number }[]
    rows: number
    bytes: number
  }[] = []
  for (let g = 0; g < rows.length; g += rowGroupSize) {
    const part = rows.slice(g, g + rowGroupSize)
    const group = {
      columns: [] as { offset: number; size: number; name: string; type: number }[],
      rows: part.length,
      bytes: 0,
    }
    for (const col of columns) {
      const data: Buffer[] = []
      for (const r of part) {
        const v = r[col.name]!
        if (col.type === "string") {
          const b = Buffer.from(String(v))
          const len = Buffer.alloc(4)
          len.writeUInt32LE(b.length)
          data.push(len, b)
        } else {
          const b = Buffer.alloc(8)
          b.writeBigInt64LE(BigInt(v))
          data.push(b)
        }
      }
      const body = Buffer.concat(data)
      const h = new Thrift()
      h.begin(() => {
        h.i32(1, 0) // DATA_PAGE
        h.i32(2, body.length)
        h.i32(3, body.length)
        h.struct(5, () => {
          h.i32(1, part.length)
          h.i32(2, 0) // PLAIN
          h.i32(3, 3) // RLE
          h.i32(4, 3)
        })
      })
      const header = Buffer.from(h.bytes)
      const size = header.length + body.length
      group.columns.push({ offset, size, name: col.name, type: col.type === "string" ? 6 : 2 })
      group.bytes += size
      chunks.push(header, body)
      offset += size
    }
    groups.push(group)
  }
  const m = new Thrift()
  m.begin(() => {
    m.i32(1, 1)
    m.list(2, 12, [
      () =>
        m.begin(() => {
          m.string(4, "schema")
          m.i32(5, columns.length)
        }),
      ...columns.map(
        (c) => () =>
          m.begin(() => {
            m.i32(1, c.type === "string" ? 6 : 2)
            m.i32(3, 0) // REQUIRED
            m.string(4, c.name)
            if (c.type === "string") m.i32(6, 0) // UTF8
          }),
      ),
    ])
    m.i64(3, rows.length)
    m.list(
      4,
      12,
      groups.map(
        (g) => () =>
          m.begin(() => {
            m.list(
              1,
              12,
              g.columns.map(
                (c) => () =>
                  m.begin(() => {
                    m.i64(2, c.offset)
                    m.struct(3, () => {
                      m.i32(1, c.type)
                      m.list(2, 5, [() => m.zigzag(0)])
                      m.list(3, 8, [
                        () => {
                          const b = Buffer.from(c.name)
                          m.varint(b.length)
                          m.bytes.push(...b)
                        },
                      ])
                      m.i32(4, 0) // UNCOMPRESSED
                      m.i64(5, g.rows)
                      m.i64(6, c.size)
                      m.i64(7, c.size)
                      m.i64(9, c.offset)
                    })
                  }),
              ),
            )
            m.i64(2, g.bytes)
            m.i64(3, g.rows)
          }),
      ),
    )
  })
  const footer = Buffer.from(m.bytes)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(footer.length)
  chunks.push(footer, len, Buffer.from("PAR1"))
  fs.writeFileSync(file, Buffer.concat(chunks))
}
