import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Store } from "../../cache/Store.ts"
import { verifyStore } from "../../cache/Verify.ts"
import { type Chunk, chunkSizes, chunksOf, LineIndexer, readIndexedChunk } from "../../core/Chunks.ts"
import { hashFileSync } from "../../core/Hash.ts"
import { hashWithLineIndex } from "../../core/Sources.ts"
import { haveShared, sharedDir } from "../support/data.ts"

const gsm8k = path.join(sharedDir, "datasets/gsm8k/test.jsonl")
const have = haveShared("chunk boundaries on GSM8K", gsm8k)

const all = async (file: string, target: number): Promise<Chunk[]> => {
  const out: Chunk[] = []
  for await (const c of chunksOf(file, chunkSizes(target))) out.push(c)
  return out
}

describe.skipIf(!have)("content-defined chunks", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tg-chunks-"))
  const lines = fs
    .readFileSync(gsm8k, "utf8")
    .split("\n")
    .filter((l) => l.length > 0)

  it("cut at line ends, concatenate to the file, and move only near an edit", async () => {
    const a = path.join(dir, "a.jsonl")
    fs.writeFileSync(a, `${lines.join("\n")}\n`)
    const before = await all(a, 16 * 1024)
    expect(Buffer.concat(before.map((c) => c.bytes)).equals(fs.readFileSync(a))).toBe(true)
    expect(before.length).toBeGreaterThan(20)
    for (const c of before) expect(c.bytes[c.bytes.length - 1]).toBe(10)
    expect(before.reduce((n, c) => n + c.lines, 0)).toBe(lines.length)
    expect(before.at(-1)!.firstLine + before.at(-1)!.lines).toBe(lines.length)

    // insert two lines in the middle: the chunks before are the same, and those after come back
    const b = path.join(dir, "b.jsonl")
    const mid = Math.floor(lines.length / 2)
    fs.writeFileSync(b, `${[...lines.slice(0, mid), lines[3]!, lines[4]!, ...lines.slice(mid)].join("\n")}\n`)
    const after = await all(b, 16 * 1024)
    const old = new Set(before.map((c) => c.digest))
    const fresh = after.filter((c) => !old.has(c.digest))
    expect(fresh.length).toBeGreaterThanOrEqual(1)
    expect(fresh.length).toBeLessThanOrEqual(3)
    // an append with no final newline: only the last chunk(s) change
    const c = path.join(dir, "c.jsonl")
    fs.writeFileSync(c, `${lines.join("\n")}\n${lines[7]}`)
    const appended = await all(c, 16 * 1024)
    expect(appended.filter((x) => !old.has(x.digest)).length).toBeLessThanOrEqual(2)
    expect(appended.at(-1)!.bytes.toString().endsWith(lines[7]!)).toBe(true)
  })

  it("a line index made while hashing has chunksOf's cuts, whatever the blocks the file is read in", async () => {
    // lines of every length, one longer than both readers' blocks, and a last line without a newline
    const file = path.join(dir, "indexed.jsonl")
    const long = JSON.stringify({ question: "x".repeat(9 * 1024 * 1024), answer: "y" })
    const body: string[] = []
    for (let round = 0; round < 40; round++) {
      body.push(...lines.slice(round * 50).map((l) => `${l.slice(0, -1)}, "round": ${round}}`))
      if (round === 20) body.push(long)
    }
    fs.writeFileSync(file, `${body.join("\n")}\n${lines[7]}`)
    const { digest, size, index } = hashWithLineIndex(file)
    expect(digest).toBe(hashFileSync(file).digest)
    expect(size).toBe(fs.statSync(file).size)
    const cut = await all(file, chunkSizes().target)
    expect(cut.length).toBeGreaterThan(3)
    expect(index).toBeDefined()
    expect(index!.target).toBe(chunkSizes().target)
    expect(index!.longestLine).toBe(Buffer.byteLength(long) + 1)
    expect(index!.chunks).toEqual(
      cut.map((c) => ({
        offset: c.offset,
        size: c.bytes.length,
        firstLine: c.firstLine,
        lines: c.lines,
        digest: c.digest,
      })),
    )
    // a chunk read back by its index is its bytes; a changed file is refused, not misread
    const fd = fs.openSync(file, "r+")
    try {
      const c = index!.chunks[1]!
      expect(readIndexedChunk(fd, file, c).equals(cut[1]!.bytes)).toBe(true)
      fs.writeSync(fd, Buffer.from("Z"), 0, 1, c.offset + 3)
      expect(() => readIndexedChunk(fd, file, c)).toThrow(/changed after the file was hashed/)
    } finally {
      fs.closeSync(fd)
    }
    // a line past the indexer's limit: no index (ingest cuts the file itself and reports the line)
    const small = new LineIndexer(chunkSizes(), 1024 * 1024)
    const bytes = fs.readFileSync(file)
    for (let at = 0; at < bytes.length; at += 1 << 20) small.push(bytes.subarray(at, at + (1 << 20)))
    expect(small.end()).toBeUndefined()
  })

  it("a chunk entry commits object then row, is found again, and verify re-hashes it", () => {
    const store = Store.open(path.join(dir, "store"))
    try {
      const src = path.join(dir, "part")
      fs.mkdirSync(src)
      fs.writeFileSync(path.join(src, "x.bin"), "hello")
      const stored = store.chunkCommit("k1", src, "test", "run-1", "node")
      expect(fs.readFileSync(path.join(stored, "x.bin"), "utf8")).toBe("hello")
      expect(store.chunkLookup("k1", "run-2", "node")).toBe(stored)
      expect(store.chunkLookup("k2", "run-2", "node")).toBeUndefined()
      expect(verifyStore(store).problems).toEqual([])
      store.flushChunkUses()
      const uses = store.db.prepare("SELECT run_id FROM chunk_uses ORDER BY run_id").pluck().all()
      expect(uses).toEqual(["run-1", "run-2"])
      // a damaged object is reported, and the entry is dropped on lookup
      const file = path.join(stored, "x.bin")
      fs.chmodSync(stored, 0o755)
      fs.chmodSync(file, 0o644)
      fs.writeFileSync(file, "HELLO")
      expect(verifyStore(store).problems.join("\n")).toMatch(/damaged/)
      fs.writeFileSync(file, "hell")
      expect(store.chunkLookup("k1", "run-3", "node")).toBeUndefined()
    } finally {
      store.close()
    }
  })
})
