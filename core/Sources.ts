/**
 * Source nodes: files a pipeline reads. A source's digest is the SHA-256 of
 * the file for a single file (what `sha256sum` prints), or the manifest
 * digest of every matched file otherwise. Digests come from the stat cache
 * (dev, ino, size, mtime_ns, ctime_ns), so an unchanged file is never re-read.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Store } from "../cache/Store.ts"
import type { Artifact, ArtifactFile } from "./Artifact.ts"
import { type LineIndex, LineIndexer, wantsLineIndex } from "./Chunks.ts"
import { glob, globToRegExp, hasMagic } from "./Glob.ts"
import { hashFileSync, listFiles, manifestDigest } from "./Hash.ts"
import { HfError, type HfSnapshot, resolveHf } from "./Hf.ts"
import type { SourceSpec } from "./Pipeline.ts"

export class SourceError extends Error {
  override readonly name = "SourceError"
}

export interface ResolvedSource {
  readonly artifact: Artifact
  /** How many files had to be read (stat cache misses). */
  readonly hashed: number
}

/** The digest of one file, through the stat cache. */
export const fileDigest = (store: Store, abs: string): { digest: string; size: number; hashed: boolean } => {
  const st = fs.statSync(abs, { bigint: true })
  const row = {
    dev: Number(st.dev),
    ino: Number(st.ino),
    size: Number(st.size),
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  }
  const cached = store.statLookup(abs, row)
  if (cached !== undefined) return { digest: cached, size: row.size, hashed: false }
  const { digest, size, index } = wantsLineIndex(abs, row.size)
    ? hashWithLineIndex(abs)
    : { ...hashFileSync(abs), index: undefined }
  // The file changed while it was read: its digest would not match the stat we keep.
  const after = fs.statSync(abs, { bigint: true })
  if (after.mtimeNs === st.mtimeNs && after.size === st.size) {
    store.statRemember(abs, row, digest, BigInt(Date.now()) * 1_000_000n)
    if (index !== undefined) store.lineIndexRemember(digest, index)
  }
  return { digest, size, hashed: true }
}

/**
 * SHA-256 of a line-based file and, in the same read, its line index
 * (core/Chunks.ts): ingest then reads only the chunks it has not parsed yet.
 */
export const hashWithLineIndex = (abs: string): { digest: string; size: number; index?: LineIndex } => {
  const indexer = new LineIndexer()
  const { digest, size } = hashFileSync(abs, (block) => indexer.push(block))
  const index = indexer.end()
  return { digest, size, ...(index === undefined ? {} : { index }) }
}

/**
 * Resolves a source to its files and digest. An hf() source first finds its
 * snapshot in the hub cache (core/Hf.ts); its files and excludes are paths
 * inside the snapshot, and the artifact's meta names the repo, the revision
 * and the commit it resolved to.
 */
export const resolveSource = (
  store: Store,
  baseDir: string,
  node: string,
  spec: SourceSpec,
): ResolvedSource => {
  if (spec.hf === undefined) return resolvePaths(store, baseDir, node, spec.path, spec.exclude ?? [])
  let snap: HfSnapshot
  try {
    snap = resolveHf(spec.hf)
  } catch (e) {
    throw e instanceof HfError ? new SourceError(`source "${node}": ${e.message}`) : e
  }
  const resolved = resolvePaths(store, snap.dir, node, spec.hf.files ?? ".", [
    ...(spec.hf.exclude ?? []),
    ...(spec.exclude ?? []),
  ])
  const art = resolved.artifact
  return {
    ...resolved,
    artifact: {
      ...art,
      meta: {
        ...(art.meta as object),
        pattern: `hf://${snap.repo}@${snap.revision}`,
        hf: { repo: snap.repo, revision: snap.revision, commit: snap.commit },
      },
    },
  }
}

/** What lineage records of a source: the paths as written, and for hf() the repo, revision and commit. */
export const sourceParams = (spec: SourceSpec, artifact?: Artifact): Record<string, unknown> => {
  const hf = (artifact?.meta as { hf?: unknown } | undefined)?.hf
  return {
    path: spec.path,
    ...(spec.exclude ? { exclude: spec.exclude } : {}),
    ...(spec.hf === undefined
      ? {}
      : {
          hf: {
            ...(typeof hf === "object" && hf !== null
              ? hf
              : { repo: spec.hf.repo, revision: spec.hf.revision }),
            ...(spec.hf.files ? { files: spec.hf.files } : {}),
            ...(spec.hf.exclude ? { exclude: spec.hf.exclude } : {}),
          },
        }),
  }
}

const resolvePaths = (
  store: Store,
  baseDir: string,
  node: string,
  specPath: string | ReadonlyArray<string>,
  exclude: ReadonlyArray<string>,
): ResolvedSource => {
  const patterns = typeof specPath === "string" ? [specPath] : [...specPath]
  const excludes = exclude.map((e) => globToRegExp(toPosix(path.resolve(baseDir, e))))
  const matched: string[] = []
  let single: string | undefined
  let root: string | undefined
  for (const pat of patterns) {
    const abs = path.resolve(baseDir, pat)
    if (hasMagic(pat)) {
      const found = glob(abs)
      if (found.length === 0)
        throw new SourceError(`source "${node}": no file matches ${pat} (in ${baseDir})`)
      matched.push(...found)
      root = commonDir(root, staticDir(abs))
    } else {
      let st: fs.Stats
      try {
        st = fs.statSync(abs)
      } catch {
        throw new SourceError(`source "${node}": ${abs} does not exist`)
      }
      if (st.isDirectory()) {
        matched.push(...listFiles(abs).map((r) => path.join(abs, r)))
        root = commonDir(root, abs)
      } else {
        matched.push(abs)
        root = commonDir(root, path.dirname(abs))
        if (patterns.length === 1) single = abs
      }
    }
  }
  const files = [...new Set(matched)].filter((f) => !excludes.some((re) => re.test(toPosix(f)))).sort()
  if (files.length === 0) throw new SourceError(`source "${node}": every matched file is excluded`)
  let hashed = 0
  const entries: ArtifactFile[] = files.map((abs) => {
    const d = fileDigest(store, abs)
    if (d.hashed) hashed++
    return { path: toPosix(path.relative(root!, abs)), abs, digest: d.digest, size: d.size }
  })
  const size = entries.reduce((s, e) => s + e.size, 0)
  const digest =
    single !== undefined
      ? entries[0]!.digest
      : manifestDigest(entries.map((e) => ({ path: e.path, mode: 644, digest: e.digest, size: e.size })))
  return {
    hashed,
    artifact: {
      kind: "Files",
      digest,
      path: single ?? root!,
      isDir: single === undefined,
      size,
      meta: { root: root!, pattern: patterns.join(","), count: entries.length },
      files: entries,
    },
  }
}

const toPosix = (p: string) => p.split(path.sep).join("/")
const staticDir = (absPattern: string) => {
  const parts = absPattern.split(path.sep)
  const i = parts.findIndex((p) => hasMagic(p))
  return parts.slice(0, i).join(path.sep) || path.sep
}
const commonDir = (a: string | undefined, b: string): string => {
  if (a === undefined) return b
  const pa = a.split(path.sep)
  const pb = b.split(path.sep)
  let i = 0
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++
  return pa.slice(0, i).join(path.sep) || path.sep
}
