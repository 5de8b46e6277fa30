/**
 * How ingest divides its sources into units of cached work (core/Chunks.ts):
 * a line-based file (JSONL, text by line, not gzip) into content-defined
 * chunks, any other file whole. A unit's key carries the record kind known
 * when it starts (inferred from the first record when not given), its format
 * and whether it starts the file (where a BOM is looked for). Shared by the
 * step and by `plan`, which counts what a run would parse again.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type ChunkReuse, chunkKey, chunkSizes, chunksOfSync, type LineIndex } from "../../core/Chunks.ts"
import { type Detected, detect, type Format } from "./Format.ts"

export const lineBased = (d: Detected, textUnit: "line" | "file"): boolean =>
  !d.gzip && (d.format === "jsonl" || (d.format === "text" && textUnit === "line"))

export const unitKey = (
  recipe: string,
  digest: string,
  kind: string | undefined,
  d: Detected,
  index: number,
): string =>
  chunkKey(recipe, digest, `${kind ?? ""}|${d.format}|${d.gzip ? "gzip" : ""}|${index === 0 ? "start" : ""}`)

export interface PlanFile {
  readonly abs: string
  readonly size: number
  readonly digest: string
}

/** What a run would reuse and parse, from the chunk entries in the store (`peek` records nothing). */
export const planUnits = (
  files: ReadonlyArray<PlanFile>,
  params: { readonly format: Format | "auto"; readonly textUnit: "line" | "file"; readonly kind?: string },
  recipe: string,
  peek: (key: string) => string | undefined,
  lineIndex?: (digest: string) => LineIndex | undefined,
): ChunkReuse => {
  let kind = params.kind
  let chunks = 0
  let reused = 0
  for (const f of files) {
    const d = detect(f.abs, params.format)
    if (typeof d === "string" || f.size === 0) continue
    const index = lineIndex?.(f.digest)
    const units = !lineBased(d, params.textUnit)
      ? [{ digest: f.digest, index: 0 }]
      : index !== undefined
        ? index.chunks.map((c, i) => ({ digest: c.digest, index: i }))
        : [...mapIter(chunksOfSync(f.abs, chunkSizes()), (c) => ({ digest: c.digest, index: c.index }))]
    for (const u of units) {
      chunks++
      const hit = peek(unitKey(recipe, u.digest, kind, d, u.index))
      if (hit === undefined) continue
      reused++
      try {
        kind =
          (JSON.parse(fs.readFileSync(path.join(hit, "summary.json"), "utf8")) as { kind: string | null })
            .kind ?? kind
      } catch {
        // a damaged entry: the run will parse the unit again
        reused--
      }
    }
  }
  return { chunks, reused, computed: chunks - reused }
}

function* mapIter<A, B>(it: Iterable<A>, f: (a: A) => B): Generator<B> {
  for (const a of it) yield f(a)
}
