/**
 * A base model from the Hugging Face hub cache, end to end through the CLI
 * as a user runs it: hf() resolves a bfloat16 snapshot the test lays out
 * (links into blobs/), adapters name the repo id (or the path the pipeline
 * wrote) as base_model_name_or_path, exports keep the model's bfloat16,
 * lineage records the repo, revision, commit and every file's digest, and a
 * revision missing from the cache fails saying how to download it, leaving
 * the cached results as they were.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { loadModel, saveHfModel } from "../../plugins/train/ModelIO.ts"
import { readSafetensors, writeSafetensors } from "../../plugins/train/Safetensors.ts"
import { cli, repoRoot, runJson, sha256sum, statuses, tempDir } from "../support/cli.ts"
import { storiesBin, tok512Bin } from "../support/data.ts"
import { addSnapshot, filesOf } from "../support/hubCache.ts"
import { hasTorch } from "../support/python.ts"

/** The dtype a config.json declares: transformers 5 writes `dtype`, older versions `torch_dtype`; where both are there they agree. */
const declaredDtype = (file: string): unknown => {
  const c = JSON.parse(fs.readFileSync(file, "utf8")) as { dtype?: unknown; torch_dtype?: unknown }
  if (c.dtype !== undefined && c.torch_dtype !== undefined && c.dtype !== c.torch_dtype)
    throw new Error(`${file}: dtype ${String(c.dtype)} and torch_dtype ${String(c.torch_dtype)} disagree`)
  return c.dtype ?? c.torch_dtype
}

const REPO = "karpathy/stories260K"

/** A project with stories260K saved as a bfloat16 Hugging Face directory, in a hub cache and at models/stories. */
const project = () => {
  const dir = tempDir("hf-base")
  fs.copyFileSync(path.join(repoRoot, "test/fixtures/hf/pipeline.ts"), path.join(dir, "pipeline.ts"))
  fs.mkdirSync(path.join(dir, "data"))
  fs.copyFileSync(
    path.join(repoRoot, "pipelines/data/stories/instructions.jsonl"),
    path.join(dir, "data/instructions.jsonl"),
  )
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  const snapshot = path.join(tempDir("hf-download"), "stories")
  saveHfModel(snapshot, { ...loadModel(storiesBin), dtype: "BF16" }, { store: "BF16" })
  fs.copyFileSync(tok512Bin, path.join(snapshot, "tok512.bin"))
  const cache = path.join(dir, "hf-home/hub")
  const commit = addSnapshot(cache, REPO, filesOf(snapshot), ["main"])
  // The same model kept at a path, as float32.
  saveHfModel(path.join(dir, "models/stories"), loadModel(storiesBin))
  fs.cpSync(path.join(dir, "models/stories"), path.join(dir, "models/copy"), { recursive: true })
  const env = { HF_HOME: path.join(dir, "hf-home"), HF_HUB_CACHE: "", TUNEGRAPH_BACKEND: "wasm" }
  return { dir, cache, commit, env }
}

/** Every object file in the store, so a run that fails can be shown to have added or removed none. */
const objectFiles = (dir: string) =>
  fs
    .readdirSync(path.join(dir, ".tunegraph/objects"), { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => path.join(e.parentPath, e.name))
    .sort()

const adapterConfig = (dir: string, name: string) =>
  JSON.parse(fs.readFileSync(path.join(dir, "out", name, "adapter_config.json"), "utf8")) as {
    base_model_name_or_path: string
  }

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("a base from the Hugging Face hub cache, through the CLI", () => {
  const p = project()
  let first: ReturnType<typeof runJson>

  it("trains and exports: adapters name the repo id or the path as written, exports stay bfloat16", () => {
    // The path-named base first, so its adapter is in the cache when its copy's turn comes.
    const local = runJson(p.dir, ["pipeline.ts", "--target", "export-local"], p.env)
    expect(local.json.status, local.stderr).toBe("succeeded")
    first = runJson(p.dir, ["pipeline.ts"], p.env)
    const failures = first.json.steps.filter((s) => s.status === "failed").map((s) => `${s.node}: ${s.error}`)
    expect(first.json.status, `${failures.join("\n")}\n${first.stderr}`).toBe("succeeded")
    expect(adapterConfig(p.dir, "hub").base_model_name_or_path).toBe(REPO)
    expect(adapterConfig(p.dir, "local").base_model_name_or_path).toBe("models/stories")
    // The same bytes under another name: the name is in the step key, so no cached adapter names the other.
    expect(statuses(first.json)["lora-copy"]).toBe("ran")
    expect(adapterConfig(p.dir, "copy").base_model_name_or_path).toBe("models/copy")
    // A base made by another step has no name a user gave it: never a store path.
    expect(adapterConfig(p.dir, "on-full").base_model_name_or_path).toBe("")
    for (const name of ["hub", "local", "copy", "on-full"])
      expect(
        new Set(readSafetensors(path.join(p.dir, "out", name, "adapter_model.safetensors")).dtypes.values()),
      ).toEqual(new Set(["F32"]))
    expect(
      new Set(readSafetensors(path.join(p.dir, "out/local-merged/model.safetensors")).dtypes.values()),
    ).toEqual(new Set(["F32"]))
    for (const name of ["full", "merged"]) {
      const out = path.join(p.dir, "out", name)
      expect(new Set(readSafetensors(path.join(out, "model.safetensors")).dtypes.values()), name).toEqual(
        new Set(["BF16"]),
      )
      expect(declaredDtype(path.join(out, "config.json"))).toBe("bfloat16")
    }
    // The full fine-tune's own record names its base.
    const full = first.json.steps.find((s) => s.node === "full-hub")!.outputs.model!.replace(/^sha256:/, "")
    const record = path.join(p.dir, ".tunegraph/objects", full.slice(0, 2), full.slice(2), "training.json")
    expect(JSON.parse(fs.readFileSync(record, "utf8")).baseName).toBe(REPO)
  })

  it("lineage of the exported adapter records the repo, the revision, the commit and every file's digest", () => {
    const r = cli(p.dir, ["lineage", "out/hub", "--json"], p.env)
    expect(r.code, r.stderr).toBe(0)
    const l = JSON.parse(r.stdout) as {
      steps: Array<{
        node: string
        params: { hf?: unknown }
        files?: Array<{ path: string; digest: string }>
      }>
    }
    const hub = l.steps.find((s) => s.node === "hub")!
    expect(hub.params.hf).toEqual({ repo: REPO, revision: "main", commit: p.commit })
    const snapshot = path.join(p.cache, "models--karpathy--stories260K/snapshots", p.commit)
    expect(hub.files!.map((f) => f.path)).toEqual(
      ["config.json", "model.safetensors", "tok512.bin"].map((f) => path.join(snapshot, f)),
    )
    for (const f of hub.files!) expect(f.digest).toBe(sha256sum(f.path))
    const human = cli(p.dir, ["lineage", "out/hub"], p.env)
    expect(human.stdout).toContain(`hf       ${REPO} revision main = commit ${p.commit}`)
  })

  it("a revision missing from the cache fails saying how to download it; what is cached stays cached", () => {
    const objects = objectFiles(p.dir)
    const missing = runJson(p.dir, ["pipeline.ts"], { ...p.env, TG_REVISION: "v2" })
    expect(missing.code).not.toBe(0)
    const hub = missing.json.steps.find((s) => s.node === "hub")!
    expect(hub.status).toBe("failed")
    expect(hub.error).toMatch(/no revision v2 of karpathy\/stories260K/)
    expect(hub.error).toMatch(/hf download karpathy\/stories260K --revision v2/)
    expect(hub.error).toContain(
      `(no ${path.join(p.cache, "models--karpathy--stories260K/refs/v2")}; cached: main)`,
    )
    expect(statuses(missing.json)["lora-local"]).toBe("cached")
    expect(statuses(missing.json)["lora-hub"]).toBe("skipped")
    // The cached results are untouched: the next run with the revision present reuses every step.
    const again = runJson(p.dir, ["pipeline.ts"], p.env)
    expect(again.code).toBe(0)
    expect(again.json.steps.filter((s) => s.status === "ran").map((s) => s.node)).toEqual([])
    expect(objectFiles(p.dir)).toEqual(objects)
    expect(cli(p.dir, ["verify"], p.env).code).toBe(0)
  })

  it("a base with a shard missing fails naming the index, the shard and a tensor; what is cached stays cached", () => {
    const objects = objectFiles(p.dir)
    const model = path.join(p.dir, "models/copy")
    const whole = path.join(p.dir, "whole.safetensors")
    fs.renameSync(path.join(model, "model.safetensors"), whole)
    // Sharded as transformers shards, with the second shard never downloaded.
    const { tensors } = readSafetensors(whole)
    const names = [...tensors.keys()]
    const first = new Map(names.slice(0, 10).map((n) => [n, tensors.get(n)!]))
    fs.writeFileSync(
      path.join(model, "model-00001-of-00002.safetensors"),
      writeSafetensors(first, { format: "pt" }),
    )
    const weightMap = Object.fromEntries(
      names.map((n, i) => [n, `model-0000${i < 10 ? 1 : 2}-of-00002.safetensors`]),
    )
    const index = path.join(model, "model.safetensors.index.json")
    fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }))
    const broken = runJson(p.dir, ["pipeline.ts"], p.env)
    expect(broken.code).not.toBe(0)
    const lora = broken.json.steps.find((s) => s.node === "lora-copy")!
    expect(lora.status).toBe("failed")
    expect(lora.error).toContain(`${index}: shard model-00002-of-00002.safetensors (holding ${names[10]} and`)
    expect(lora.error).toContain(`is missing: no ${path.join(model, "model-00002-of-00002.safetensors")}`)
    expect(broken.json.steps.filter((s) => s.status === "ran").map((s) => s.node)).toEqual(["copy"])
    expect(objectFiles(p.dir)).toEqual(objects)
    // Put back as it was, everything is cached again.
    fs.rmSync(index)
    fs.rmSync(path.join(model, "model-00001-of-00002.safetensors"))
    fs.renameSync(whole, path.join(model, "model.safetensors"))
    const again = runJson(p.dir, ["pipeline.ts"], p.env)
    expect(again.code).toBe(0)
    expect(again.json.steps.filter((s) => s.status === "ran").map((s) => s.node)).toEqual(["copy"])
    expect(statuses(again.json)["lora-copy"]).toBe("cached")
    expect(cli(p.dir, ["verify"], p.env).code).toBe(0)
  })

  it.skipIf(!hasTorch)(
    "on the torch backend too: the adapter names the repo id, the full fine-tune exports as bfloat16",
    () => {
      const r = runJson(p.dir, ["pipeline.ts", "--target", "export-hub", "--target", "export-full"], {
        ...p.env,
        TUNEGRAPH_BACKEND: "torch",
      })
      const failures = r.json.steps.filter((s) => s.status === "failed").map((s) => `${s.node}: ${s.error}`)
      expect(r.json.status, `${failures.join("\n")}\n${r.stderr}`).toBe("succeeded")
      expect(statuses(r.json)["lora-hub"]).toBe("ran")
      expect(statuses(r.json)["full-hub"]).toBe("ran")
      expect(adapterConfig(p.dir, "hub").base_model_name_or_path).toBe(REPO)
      expect(
        new Set(readSafetensors(path.join(p.dir, "out/full/model.safetensors")).dtypes.values()),
      ).toEqual(new Set(["BF16"]))
    },
  )
})
