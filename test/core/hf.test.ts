/**
 * hf(): a model from the local Hugging Face hub cache, resolved by branch,
 * tag or commit through a cache laid out as huggingface_hub lays it out
 * (snapshots of symbolic links into blobs/); a missing model says how to
 * download it and where it looked.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { Store } from "../../cache/Store.ts"
import { hashFileSync, manifestDigest } from "../../core/Hash.ts"
import { HfError, hf, hubCache } from "../../core/Hf.ts"
import { resolveSource, SourceError } from "../../core/Sources.ts"
import { sha256sum, tempDir } from "../support/cli.ts"
import { addSnapshot } from "../support/hubCache.ts"

const repo = "tiny-org/tiny-llama"
const work = tempDir("hf")
const write = (name: string, text: string) => {
  const f = path.join(work, "src", name)
  fs.mkdirSync(path.dirname(f), { recursive: true })
  fs.writeFileSync(f, text)
  return f
}
const v1 = {
  "config.json": write("v1/config.json", '{"model_type": "llama"}\n'),
  "model.safetensors": write("v1/model.safetensors", "weights of v1"),
  "tokenizer.json": write("tokenizer.json", '{"model": {}}\n'),
}
const v2 = {
  ...v1,
  "model.safetensors": write("v2/model.safetensors", "weights of v2"),
  "original/params.json": write("v2/params.json", "{}"),
}
const cache = path.join(work, "hub")
const c1 = addSnapshot(cache, repo, v1, ["v1.0"])
const c2 = addSnapshot(cache, repo, v2, ["main"])
const store = Store.open(path.join(work, "store"))
afterAll(() => store.close())

const resolve = (spec: ReturnType<typeof hf>) => resolveSource(store, work, "base", spec).artifact

describe("hf() sources", () => {
  it("reads the cache the environment names: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub", () => {
    expect(hubCache({ HF_HUB_CACHE: "/a", HF_HOME: "/b" })).toEqual({ dir: "/a", from: "HF_HUB_CACHE" })
    expect(hubCache({ HF_HOME: "/b" })).toEqual({ dir: "/b/hub", from: "HF_HOME/hub" })
    expect(hubCache({}).dir).toBe(path.join(os.homedir(), ".cache/huggingface/hub"))
    const saved = process.env.HF_HUB_CACHE
    process.env.HF_HUB_CACHE = cache
    try {
      expect(resolve(hf(repo)).meta).toMatchObject({ hf: { repo, revision: "main", commit: c2 } })
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE
      else process.env.HF_HUB_CACHE = saved
    }
  })

  it("resolves main, a tag and a commit hash to their snapshots, each file with the digest sha256sum prints", () => {
    const main = resolve(hf(repo, { cacheDir: cache }))
    expect(main.meta).toEqual({
      root: path.join(cache, "models--tiny-org--tiny-llama/snapshots", c2),
      pattern: `hf://${repo}@main`,
      count: 4,
      hf: { repo, revision: "main", commit: c2 },
    })
    expect(main.path).toBe(path.join(cache, "models--tiny-org--tiny-llama/snapshots", c2))
    expect(main.files.map((f) => f.path)).toEqual([
      "config.json",
      "model.safetensors",
      "original/params.json",
      "tokenizer.json",
    ])
    for (const f of main.files) expect(f.digest).toBe(sha256sum(f.abs))
    // A directory's digest is the manifest of its files, as for any directory source.
    expect(main.digest).toBe(
      manifestDigest(main.files.map((f) => ({ path: f.path, mode: 644, digest: f.digest, size: f.size }))),
    )
    const tag = resolve(hf(repo, { revision: "v1.0", cacheDir: cache }))
    expect(tag.meta).toMatchObject({ hf: { revision: "v1.0", commit: c1 } })
    expect(tag.files.find((f) => f.path === "model.safetensors")?.digest).toBe(
      hashFileSync(v1["model.safetensors"]).digest,
    )
    const byCommit = resolve(hf(repo, { revision: c1, cacheDir: cache }))
    expect(byCommit.digest).toBe(tag.digest)
    expect(byCommit.meta).toMatchObject({ hf: { revision: c1, commit: c1 } })
    expect(tag.digest).not.toBe(main.digest)
  })

  it("picks some files of the snapshot, or leaves some out", () => {
    const tok = resolve(hf(repo, { files: "tokenizer.json", cacheDir: cache }))
    expect(tok.isDir).toBe(false)
    expect(tok.digest).toBe(sha256sum(v1["tokenizer.json"]))
    const some = resolve(hf(repo, { files: ["config.json", "tokenizer.json"], cacheDir: cache }))
    expect(some.files.map((f) => f.path)).toEqual(["config.json", "tokenizer.json"])
    const without = resolve(hf(repo, { exclude: ["original/**"], cacheDir: cache }))
    expect(without.files.map((f) => f.path)).toEqual(["config.json", "model.safetensors", "tokenizer.json"])
  })

  it("follows refs/main when it moves to a new download", () => {
    const other = path.join(tempDir("hf-move"), "hub")
    const first = addSnapshot(other, repo, v1)
    expect(resolve(hf(repo, { cacheDir: other })).meta).toMatchObject({ hf: { commit: first } })
    const next = addSnapshot(other, repo, v2)
    expect(resolve(hf(repo, { cacheDir: other })).meta).toMatchObject({ hf: { commit: next } })
  })

  it("a model, revision or blob missing from the cache says how to download it and where it looked", () => {
    const fails = (spec: ReturnType<typeof hf>, ...patterns: RegExp[]) => {
      let error: unknown
      try {
        resolve(spec)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(SourceError)
      for (const p of patterns) expect((error as Error).message).toMatch(p)
    }
    fails(
      hf("Qwen/Qwen2.5-0.5B-Instruct", { cacheDir: cache }),
      /^source "base": hf\("Qwen\/Qwen2.5-0.5B-Instruct", revision "main"\)/,
      /not in the Hugging Face cache/,
      new RegExp(`searched ${cache}, from cacheDir`),
      /hf download Qwen\/Qwen2.5-0.5B-Instruct --revision main/,
      /huggingface-cli download Qwen\/Qwen2.5-0.5B-Instruct --revision main/,
    )
    fails(
      hf(repo, { revision: "v9", cacheDir: cache }),
      /no revision v9/,
      /cached: main, v1.0/,
      /hf download tiny-org\/tiny-llama --revision v9/,
    )
    fails(hf(repo, { revision: "f".repeat(40), cacheDir: cache }), /commit f{40} has no snapshot/)
    // An interrupted download: the link is there, its blob is not.
    const broken = path.join(tempDir("hf-broken"), "hub")
    const c = addSnapshot(broken, repo, v1)
    const link = path.join(broken, "models--tiny-org--tiny-llama/snapshots", c, "model.safetensors")
    fs.rmSync(path.resolve(path.dirname(link), fs.readlinkSync(link)))
    fails(hf(repo, { cacheDir: broken }), /model.safetensors links to .*blobs.*, which is missing/)
    // A ref that does not hold a commit.
    fs.writeFileSync(path.join(broken, "models--tiny-org--tiny-llama/refs/main"), "garbage\n")
    fails(hf(repo, { cacheDir: broken }), /refs\/main holds "garbage", not a commit hash/)
  })

  it("refuses what is not a model id, a revision or a path inside the snapshot", () => {
    expect(() => hf("../etc")).toThrow(HfError)
    expect(() => hf("a/b/c")).toThrow(/not a Hugging Face model id/)
    expect(() => hf(repo, { revision: "../x" })).toThrow(/not a branch, tag or commit/)
    expect(() => hf(repo, { files: "../config.json" })).toThrow(/must be a path inside the snapshot/)
  })
})
