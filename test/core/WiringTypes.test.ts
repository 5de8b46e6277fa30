/**
 * Wiring.test.ts's type-level checks run with `npm test`, not only in CI's
 * type check: its @ts-expect-error lines must each mark a real type error
 * (a wrong wiring), and everything else in it must compile.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const repoRoot = path.resolve(import.meta.dirname, "../..")
const wiring = path.join(repoRoot, "test/core/Wiring.test.ts")

describe("typed wiring", () => {
  it("tsc accepts Wiring.test.ts, whose wrong wirings are all type errors", () => {
    expect(fs.readFileSync(wiring, "utf8").match(/@ts-expect-error/g)?.length ?? 0).toBeGreaterThanOrEqual(5)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tg-wiring-"))
    const config = path.join(dir, "tsconfig.json")
    fs.writeFileSync(
      config,
      JSON.stringify({
        extends: path.join(repoRoot, "tsconfig.json"),
        compilerOptions: { noEmit: true, typeRoots: [path.join(repoRoot, "node_modules/@types")] },
        files: [wiring],
        include: [],
      }),
    )
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
    const r = spawnSync(process.execPath, [tsc, "-p", config], { encoding: "utf8", cwd: repoRoot })
    expect(r.stdout + r.stderr).toBe("")
    expect(r.status).toBe(0)
  }, 120_000)
})
