/**
 * Parameter rules live in each plugin's Schema: `plan` and `run` refuse a bad
 * value (exit 2, naming node and field) before any step runs, upstream included.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { dedupe } from "../../plugins/dedupe/index.ts"
import { evaluate } from "../../plugins/eval/index.ts"
import { exportAdapter } from "../../plugins/export/index.ts"
import { split } from "../../plugins/split/index.ts"
import { cli, repoRoot, tempDir } from "../support/cli.ts"

const project = () => {
  const dir = tempDir("params")
  fs.copyFileSync(path.join(repoRoot, "test/fixtures/params/pipeline.ts"), path.join(dir, "pipeline.ts"))
  fs.writeFileSync(
    path.join(dir, "data.jsonl"),
    `${[1, 2, 3].map((i) => JSON.stringify({ prompt: `p${i}`, completion: `c${i}` })).join("\n")}\n`,
  )
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  return dir
}

/** Executions recorded in the project's store (none when it was never created). */
const executions = (dir: string) => {
  const objects = path.join(dir, ".tunegraph/objects")
  return fs.existsSync(objects) ? fs.readdirSync(objects).length : 0
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("parameter rules are checked before anything runs", () => {
  const cases: Array<{ set: string[]; node: string; says: string }> = [
    {
      set: ['split.ratios={"train":0.8,"validation":0.1,"test":0.5}'],
      node: "split",
      says: "ratios: ratios must add up to 1",
    },
    {
      set: ['split.ratios={"train":-0.2,"validation":1.1,"test":0.1}'],
      node: "split",
      says: "ratios.train: ratio train must be between 0 and 1",
    },
    {
      set: ["dedupe.near=true", "dedupe.bands=20"],
      node: "dedupe",
      says: "bands: bands × rows (20 × 8 = 160) exceeds permutations (128)",
    },
    { set: ["dedupe.exact=false"], node: "dedupe", says: "near: nothing to do" },
  ]
  for (const c of cases)
    it(`run and plan refuse ${c.set.join(" ")} naming ${c.node}`, () => {
      const dir = project()
      const sets = c.set.flatMap((s) => ["--set", s])
      for (const cmd of ["run", "plan"]) {
        const r = cli(dir, [cmd, "pipeline.ts", ...sets])
        expect(r.code, `${cmd}: ${r.stdout}${r.stderr}`).toBe(2)
        expect(r.stderr).toContain(`node "${c.node}"`)
        expect(r.stderr).toContain(c.says)
      }
      // Not even ingest ran.
      expect(executions(dir)).toBe(0)
      // The same pipeline with good values runs.
      expect(cli(dir, ["run", "pipeline.ts"]).code).toBe(0)
      expect(executions(dir)).toBeGreaterThan(0)
    })

  it("the Schemas themselves carry the rules", () => {
    expect(() =>
      Schema.decodeUnknownSync(split.params)({ ratios: { train: 0.8, validation: 0.1, test: 0.2 } }),
    ).toThrow(/ratios must add up to 1/)
    expect(() => Schema.decodeUnknownSync(dedupe.params)({ near: true, bands: 20, rows: 8 })).toThrow(
      /exceeds permutations/,
    )
    expect(() => Schema.decodeUnknownSync(evaluate.params)({ regex: "(" })).toThrow(/does not compile/)
    expect(() => Schema.decodeUnknownSync(evaluate.params)({ scorers: { loss: () => 1 } })).toThrow(
      /taken by a built-in/,
    )
    expect(() => Schema.decodeUnknownSync(evaluate.params)({ scorers: { "a b": () => 1 } })).toThrow(
      /may hold only/,
    )
    expect(
      Schema.decodeUnknownSync(evaluate.params)({ regex: "#### (.+)", scorers: { ok: () => 1 } }),
    ).toBeTruthy()
    expect(() => Schema.decodeUnknownSync(exportAdapter.params)({ to: "exports/../../x" })).toThrow(
      /"\.\." segment/,
    )
    expect(Schema.decodeUnknownSync(dedupe.params)({ near: true, bands: 16, rows: 8 })).toMatchObject({
      bands: 16,
    })
  })
})
