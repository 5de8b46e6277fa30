/**
 * Exports are sinks: a cached export whose directory is gone or differs is
 * written again without --force, a run from another working directory
 * writes its own copy, and `reproduce` writes nothing outside its scratch store.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { cli, type RunJson, repoRoot, runJson, statuses, tempDir } from "../../support/cli.ts"

const project = () => {
  const dir = tempDir("sink")
  fs.copyFileSync(path.join(repoRoot, "test/fixtures/exports/pipeline.ts"), path.join(dir, "pipeline.ts"))
  for (const f of ["stories260K.bin", "tok512.bin"])
    fs.copyFileSync(path.join(repoRoot, "pipelines/data/stories260K", f), path.join(dir, f))
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  return dir
}

/** The files of a directory with their bytes. */
const contents = (dir: string) =>
  Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(dir, f)).toString("base64")]),
  )

const exportOf = (j: RunJson) =>
  j.steps.find((s) => s.node === "export")!.outputs.export!.replace(/^sha256:/, "")

const objectDir = (dir: string, digest: string) =>
  path.join(dir, ".tunegraph/objects", digest.slice(0, 2), digest.slice(2))

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("exports are sinks", () => {
  it("a cached export whose directory is missing or edited is written again, without --force", () => {
    const dir = project()
    const target = path.join(dir, "exported/model")
    const first = runJson(dir, ["pipeline.ts"])
    expect(first.code).toBe(0)
    const artifact = contents(objectDir(dir, exportOf(first.json)))
    expect(contents(target)).toEqual(artifact)

    fs.rmSync(target, { recursive: true })
    const again = runJson(dir, ["pipeline.ts"])
    expect(again.code).toBe(0)
    expect(statuses(again.json).export).toBe("cached")
    expect(contents(target)).toEqual(artifact)

    // A file edited in place (same size), and a file of the export removed.
    const config = path.join(target, "config.json")
    const text = fs.readFileSync(config, "utf8")
    fs.writeFileSync(config, text.replace(/"/, "'"))
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    expect(contents(target)).toEqual(artifact)
    fs.rmSync(path.join(target, "model.safetensors"))
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    expect(contents(target)).toEqual(artifact)

    // Untouched, nothing is written: the directory keeps its inode.
    const ino = fs.statSync(target).ino
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    expect(fs.statSync(target).ino).toBe(ino)
  })

  it("the same pipeline run from another working directory writes its exports there", () => {
    const dir = project()
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    const elsewhere = tempDir("sink-cwd")
    const r = runJson(elsewhere, [path.join(dir, "pipeline.ts"), "--store", path.join(dir, ".tunegraph")])
    expect(r.code).toBe(0)
    expect(statuses(r.json).export).toBe("cached")
    expect(contents(path.join(elsewhere, "exported/model"))).toEqual(
      contents(path.join(dir, "exported/model")),
    )
  })

  it("reproduce writes no export outside its scratch store, relative or absolute", () => {
    for (const absolute of [false, true]) {
      const dir = project()
      const target = absolute ? path.join(tempDir("sink-abs"), "model") : path.join(dir, "exported/model")
      const env: Record<string, string> = absolute ? { TG_EXPORT_TO: target } : {}
      const first = runJson(dir, ["pipeline.ts"], env)
      expect(first.code).toBe(0)
      expect(fs.existsSync(target)).toBe(true)
      fs.rmSync(target, { recursive: true })
      const cwd = tempDir("sink-reproduce")
      const r = cli(
        cwd,
        ["reproduce", `sha256:${exportOf(first.json)}`, "--json", "--store", path.join(dir, ".tunegraph")],
        env,
      )
      expect(r.code, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout).identical).toBe(true)
      expect(fs.existsSync(target), target).toBe(false)
      expect(fs.readdirSync(cwd)).toEqual([])
    }
  })
})
