/**
 * Several processes on one store, as a team's CI jobs or a user's two
 * terminals are: four CLI processes race on the same pipeline, twenty rounds
 * on fresh stores (creation and migrations race too) and twenty on one
 * existing store (new keys each round). Every key is computed exactly once,
 * every process exits 0 with its JSON, and all four agree on every output.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { engineProject } from "../fixtures/engine/project.ts"
import { type RunJson, runJsonAsync } from "../support/cli.ts"

const PROCESSES = 4
const ROUNDS = 20

const traced = (trace: string) =>
  fs.existsSync(trace) ? fs.readFileSync(trace, "utf8").trim().split("\n").filter(Boolean) : []

const run = async (dir: string, args: ReadonlyArray<string>, env: Record<string, string>) => {
  const r = await runJsonAsync(dir, ["pipeline.ts", ...args], env)
  if (r.code !== 0)
    throw new Error(`a process exited ${r.code}:\n${JSON.stringify(r.json)}\nstderr: ${r.stderr}`)
  return r.json
}

const race = (dir: string, args: ReadonlyArray<string>, env: Record<string, string>) =>
  Promise.all(Array.from({ length: PROCESSES }, () => run(dir, args, env)))

const outputs = (j: RunJson) => Object.fromEntries(j.steps.map((s) => [s.node, s.outputs]))

describe(`${PROCESSES} processes racing on one store`, () => {
  it(`${ROUNDS} rounds on fresh stores: each key computed once, every process exits with its JSON`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const dir = engineProject("race-fresh")
      const trace = path.join(dir, "trace")
      const results = await race(dir, [], { TG_TRACE: trace, TG_SLEEP_MS: String(round % 3) })
      const keys = traced(trace).map((l) => l.split(" ")[1])
      expect(keys, `round ${round}`).toHaveLength(7)
      expect(new Set(keys).size, `round ${round}`).toBe(7)
      for (const r of results) {
        expect(r.status).toBe("succeeded")
        expect(outputs(r)).toEqual(outputs(results[0]!))
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 600_000)

  it(`${ROUNDS} rounds on one existing store, new keys each round: each computed once`, async () => {
    const dir = engineProject("race-existing")
    const trace = path.join(dir, "trace")
    await run(dir, [], { TG_TRACE: trace })
    let seen = traced(trace).length
    for (let round = 0; round < ROUNDS; round++) {
      // A new `times` gives "upper" and "shout" new keys; everything else is cached.
      const results = await race(dir, ["--set", `upper.times=${round + 2}`], { TG_TRACE: trace })
      const lines = traced(trace)
      const fresh = lines
        .slice(seen)
        .map((l) => l.split(" ")[0])
        .sort()
      expect(fresh, `round ${round}`).toEqual(["shout", "upper"])
      seen = lines.length
      for (const r of results) {
        expect(r.status).toBe("succeeded")
        expect(outputs(r)).toEqual(outputs(results[0]!))
      }
    }
    const keys = traced(trace).map((l) => l.split(" ")[1])
    expect(new Set(keys).size).toBe(keys.length)
  }, 600_000)
})
