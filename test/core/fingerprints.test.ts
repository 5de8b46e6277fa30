/**
 * Code fingerprints come from the modules a plugin really imports (core
 * included), count code and not comments, keep the torch worker's Python in,
 * and the npm packages a step loads enter its environment with their versions.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import Database from "better-sqlite3"
import { beforeAll, describe, expect, it } from "vitest"
import { cli, repoRoot, runJson, tempDir } from "../support/cli.ts"

// @ts-expect-error a build script without types
const { pluginCode } = (await import("../../scripts/fingerprints.mjs")) as {
  pluginCode: (root: string) => Promise<Record<string, { hash: string; packages: string[] }>>
}

/** A copy of the sources pluginCode reads, to edit. */
const copy = () => {
  const dir = tempDir("fingerprints")
  for (const d of ["core", "plugins"])
    fs.cpSync(path.join(repoRoot, d), path.join(dir, d), { recursive: true })
  fs.copyFileSync(path.join(repoRoot, "package.json"), path.join(dir, "package.json"))
  fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"))
  return dir
}

const hashes = async (dir: string) =>
  Object.fromEntries(Object.entries(await pluginCode(dir)).map(([k, v]) => [k, v.hash]))

const edit = (dir: string, file: string, f: (s: string) => string) => {
  const p = path.join(dir, file)
  const before = fs.readFileSync(p, "utf8")
  const after = f(before)
  expect(after).not.toBe(before)
  fs.writeFileSync(p, after)
  return () => fs.writeFileSync(p, before)
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("code fingerprints", () => {
  it("follow the import graph, core included, and ignore comments", async () => {
    const dir = copy()
    const base = await hashes(dir)
    expect(Object.keys(base)).toContain("plugins/ingest")

    // A comment and formatting in core/Canonical.ts: nothing changes.
    let undo = edit(dir, "core/Canonical.ts", (s) =>
      s.replace("export const canonicalJson", "// a note\n\nexport   const canonicalJson"),
    )
    expect(await hashes(dir)).toEqual(base)
    undo()
    // Its code: ingest (whose output it shapes) changes.
    undo = edit(dir, "core/Canonical.ts", (s) =>
      s.replace('if (value === null) return "null"', 'if (value === null || value === false) return "null"'),
    )
    expect((await hashes(dir))["plugins/ingest"]).not.toBe(base["plugins/ingest"])
    undo()

    // A module of dedupe's: dedupe changes, tokenize and ingest (which never import it) do not.
    undo = edit(dir, "plugins/dedupe/MinHash.ts", (s) => `${s}\nexport const probe = 1\n`)
    const after = await hashes(dir)
    expect(after["plugins/dedupe"]).not.toBe(base["plugins/dedupe"])
    expect(after["plugins/tokenize"]).toBe(base["plugins/tokenize"])
    expect(after["plugins/ingest"]).toBe(base["plugins/ingest"])
    undo()

    // The torch worker's Python counts by its bytes, for the trainers only.
    undo = edit(dir, "plugins/train/torch/tunegraph_torch/train.py", (s) => `${s}\n# changed\n`)
    const py = await hashes(dir)
    expect(py["plugins/train-lora"]).not.toBe(base["plugins/train-lora"])
    expect(py["plugins/ingest"]).toBe(base["plugins/ingest"])
    undo()
    expect(await hashes(dir)).toEqual(base)
  }, 120_000)

  it("list the npm packages a step loads", async () => {
    const code = await pluginCode(repoRoot)
    expect(code["plugins/ingest"]?.packages).toEqual(["hyparquet"])
    expect(code["plugins/tokenize"]?.packages).toEqual(
      expect.arrayContaining(["tokenizers", "@huggingface/jinja"]),
    )
    expect(code["plugins/train-lora"]?.packages).toEqual(expect.arrayContaining(["@tensorflow/tfjs-core"]))
    expect(code["plugins/split"]?.packages).toEqual([])
  })

  it("plan names a package's new version: dependency hyparquet A -> B", () => {
    const dir = tempDir("deps")
    fs.copyFileSync(path.join(repoRoot, "test/fixtures/params/pipeline.ts"), path.join(dir, "pipeline.ts"))
    fs.writeFileSync(path.join(dir, "data.jsonl"), `${JSON.stringify({ prompt: "p", completion: "c" })}\n`)
    fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    const version = JSON.parse(
      fs.readFileSync(path.join(repoRoot, "node_modules/hyparquet/package.json"), "utf8"),
    ).version as string
    // As if the last run had loaded an older hyparquet.
    const db = new Database(path.join(dir, ".tunegraph/db.sqlite"))
    const row = db
      .prepare("SELECT id, step_key, ingredients FROM executions WHERE node = 'ingest'")
      .get() as {
      id: number
      step_key: string
      ingredients: string
    }
    const ingredients = JSON.parse(row.ingredients)
    expect(ingredients.environment).toEqual({
      "npm:hyparquet": version,
      "chunk bytes": String(2 * 1024 * 1024),
    })
    ingredients.environment["npm:hyparquet"] = "1.0.0"
    db.prepare("UPDATE executions SET ingredients = ? WHERE id = ?").run(JSON.stringify(ingredients), row.id)
    db.prepare("DELETE FROM step_cache WHERE step_key = ?").run(row.step_key)
    db.close()
    const plan = cli(dir, ["plan", "pipeline.ts"])
    expect(plan.stdout).toContain(`dependency hyparquet 1.0.0 -> ${version}`)
  })
})
