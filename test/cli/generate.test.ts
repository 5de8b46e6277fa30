/**
 * `tunegraph generate` as a user runs it, against llama2.c's own output:
 * test/fixtures/stories260K/greedy-200.txt is what llama2.c's reference `run`
 * printed for stories260K at temperature 0, 200 steps, from BOS.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { cli, repoRoot } from "../support/cli.ts"

const model = path.join(repoRoot, "pipelines/data/stories260K/stories260K.bin")

describe("tunegraph generate", () => {
  it("prints exactly llama2.c's greedy story for stories260K", () => {
    const r = cli(repoRoot, ["generate", "--model", model, "--temperature", "0", "--max-tokens", "200"], {
      TUNEGRAPH_BACKEND: "cpu",
    })
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    const expected = fs.readFileSync(path.join(repoRoot, "test/fixtures/stories260K/greedy-200.txt"), "utf8")
    expect(Buffer.byteLength(expected)).toBe(465) // 464 bytes of story and run.c's final newline
    expect(r.stdout).toBe(expected)
  })

  it("names the bad flag or file", () => {
    const missing = cli(repoRoot, ["generate", "--model", "/nonexistent/model.bin"])
    expect(missing.code).not.toBe(0)
    expect(missing.stderr).toContain("/nonexistent/model.bin")
  })
})
