/**
 * Sources from the local Hugging Face hub cache, as `huggingface_hub` lays it
 * out and `hf download` fills it:
 *
 *   <cache>/models--Org--Name/refs/<revision>        a file holding a commit hash
 *   <cache>/models--Org--Name/snapshots/<commit>/...  the files, symbolic links into blobs/
 *   <cache>/models--Org--Name/blobs/<digest>
 *
 * where <cache> is HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else
 * HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. `hf(repo, { revision })` names a snapshot by
 * branch, tag or commit hash ("main" by default); the run resolves it when
 * the source is read, so a fresh download of the branch is picked up. Nothing
 * is ever fetched: a missing model is an error that says how to download it.
 *
 *   const base = p.source("base", hf("Qwen/Qwen2.5-0.5B-Instruct", { revision: "main" }), Model)
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { SourceSpec } from "./Pipeline.ts"

export interface HfOptions {
  /** A branch, a tag or a 40-hex commit hash; "main" by default. */
  readonly revision?: string
  /** Only these files of the snapshot (paths or globs inside it): say, a tokenizer without the weights. */
  readonly files?: string | ReadonlyArray<string>
  /** Files of the snapshot to leave out (globs inside it), say `*.bin` beside the safetensors. */
  readonly exclude?: ReadonlyArray<string>
  /** The hub cache directory, instead of the one the environment names. */
  readonly cacheDir?: string
}

/** What an hf() source names; recorded in lineage with the commit it resolved to. */
export interface HfSpec {
  readonly repo: string
  readonly revision: string
  /** The hub cache searched, and where that came from (for the error when the model is missing). */
  readonly cacheDir: string
  readonly cacheFrom: string
  readonly files?: ReadonlyArray<string>
  readonly exclude?: ReadonlyArray<string>
}

/** A snapshot found in the cache. */
export interface HfSnapshot {
  readonly repo: string
  readonly revision: string
  readonly commit: string
  /** The snapshot directory (its files are links into blobs/). */
  readonly dir: string
}

/** A source step reports it as a SourceError naming the node. */
export class HfError extends Error {
  override readonly name = "HfError"
}

const COMMIT = /^[0-9a-f]{40}$/
const REPO = /^[A-Za-z0-9][A-Za-z0-9_.-]*(\/[A-Za-z0-9][A-Za-z0-9_.-]*)?$/

/** The hub cache the environment names, and which variable named it. */
export const hubCache = (env: NodeJS.ProcessEnv = process.env): { dir: string; from: string } => {
  if (env.HF_HUB_CACHE) return { dir: path.resolve(env.HF_HUB_CACHE), from: "HF_HUB_CACHE" }
  if (env.HUGGINGFACE_HUB_CACHE)
    return { dir: path.resolve(env.HUGGINGFACE_HUB_CACHE), from: "HUGGINGFACE_HUB_CACHE" }
  if (env.HF_HOME) return { dir: path.resolve(env.HF_HOME, "hub"), from: "HF_HOME/hub" }
  if (env.XDG_CACHE_HOME)
    return {
      dir: path.resolve(env.XDG_CACHE_HOME, "huggingface", "hub"),
      from: "XDG_CACHE_HOME/huggingface/hub",
    }
  return {
    dir: path.join(os.homedir(), ".cache", "huggingface", "hub"),
    from: "the default; set HF_HUB_CACHE or HF_HOME to look elsewhere",
  }
}

/** The folder of a model repository in the cache, as huggingface_hub names it. */
export const repoFolder = (repo: string): string => `models--${repo.split("/").join("--")}`

const checkRepo = (repo: string) => {
  if (!REPO.test(repo) || repo.includes("..") || repo.includes("--"))
    throw new HfError(
      `hf(${JSON.stringify(repo)}): not a Hugging Face model id (Org/Name or Name: letters, digits, _ . -)`,
    )
}

/**
 * A source reading a model (or some of its files) from the local hub cache.
 * Use it wherever a path names a model or tokenizer source.
 */
export const hf = (repo: string, options: HfOptions = {}): SourceSpec => {
  checkRepo(repo)
  const revision = options.revision ?? "main"
  if (revision === "" || revision.split("/").some((s) => s === ".." || s === "." || s === ""))
    throw new HfError(
      `hf(${JSON.stringify(repo)}): revision ${JSON.stringify(revision)} is not a branch, tag or commit`,
    )
  const cache =
    options.cacheDir === undefined ? hubCache() : { dir: path.resolve(options.cacheDir), from: "cacheDir" }
  const files =
    options.files === undefined
      ? undefined
      : typeof options.files === "string"
        ? [options.files]
        : [...options.files]
  for (const f of [...(files ?? []), ...(options.exclude ?? [])])
    if (path.isAbsolute(f) || f.split(/[\\/]+/).includes(".."))
      throw new HfError(
        `hf(${JSON.stringify(repo)}): ${JSON.stringify(f)} must be a path inside the snapshot`,
      )
  const spec: HfSpec = {
    repo,
    revision,
    cacheDir: cache.dir,
    cacheFrom: cache.from,
    ...(files === undefined ? {} : { files }),
    ...(options.exclude === undefined ? {} : { exclude: [...options.exclude] }),
  }
  // The repository's folder is what watch follows: a new download of the branch lands there.
  return { path: path.join(cache.dir, repoFolder(repo)), hf: spec }
}

const download = (s: HfSpec) =>
  `download it first with \`hf download ${s.repo} --revision ${s.revision}\` (or \`huggingface-cli download ${s.repo} --revision ${s.revision}\`), with HF_HUB_CACHE or HF_HOME set as here; tunegraph never fetches at run time`

const listDir = (dir: string): string[] => {
  try {
    return fs.readdirSync(dir).sort()
  } catch {
    return []
  }
}

/** Branch and tag names under refs/ (a PR ref is refs/pr/N). */
const refNames = (refs: string, prefix = ""): string[] =>
  listDir(refs).flatMap((n) => {
    const p = path.join(refs, n)
    return fs.statSync(p).isDirectory() ? refNames(p, `${prefix}${n}/`) : [`${prefix}${n}`]
  })

/** Finds the snapshot a spec names: the revision through refs/ (or as a commit), then its directory. */
export const resolveHf = (s: HfSpec): HfSnapshot => {
  const where = `hf(${JSON.stringify(s.repo)}, revision ${JSON.stringify(s.revision)})`
  const repoDir = path.join(s.cacheDir, repoFolder(s.repo))
  if (!fs.existsSync(repoDir))
    throw new HfError(
      `${where}: ${s.repo} is not in the Hugging Face cache (searched ${s.cacheDir}, from ${s.cacheFrom}; no ${repoFolder(s.repo)} there): ${download(s)}`,
    )
  let commit: string
  const ref = path.join(repoDir, "refs", s.revision)
  if (fs.existsSync(ref) && fs.statSync(ref).isFile()) {
    commit = fs.readFileSync(ref, "utf8").trim()
    if (!COMMIT.test(commit))
      throw new HfError(`${where}: ${ref} holds ${JSON.stringify(commit.slice(0, 80))}, not a commit hash`)
  } else if (COMMIT.test(s.revision)) commit = s.revision
  else {
    const known = refNames(path.join(repoDir, "refs"))
    throw new HfError(
      `${where}: the cache has no revision ${s.revision} of ${s.repo} (no ${ref}; ${
        known.length === 0 ? "no branch or tag is cached" : `cached: ${known.join(", ")}`
      }): ${download(s)}`,
    )
  }
  const dir = path.join(repoDir, "snapshots", commit)
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    const have = listDir(path.join(repoDir, "snapshots"))
    throw new HfError(
      `${where}: commit ${commit} has no snapshot in ${path.join(repoDir, "snapshots")} (${
        have.length === 0 ? "none is cached" : `cached: ${have.map((h) => h.slice(0, 12)).join(", ")}`
      }): ${download(s)}`,
    )
  }
  // A link whose blob is gone: an interrupted download or a cache pruned by hand.
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isSymbolicLink() && !fs.existsSync(p))
        throw new HfError(
          `${where}: ${p} links to ${fs.readlinkSync(p)}, which is missing (an interrupted download?): ${download(s)}`,
        )
    }
  }
  walk(dir)
  return { repo: s.repo, revision: s.revision, commit, dir }
}
