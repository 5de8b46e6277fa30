/**
 * Test data: what the repository ships (pipelines/data: stories260K and its
 * tok512 tokenizer), which every suite can count on, and the shared datasets
 * beside the repository (../shared/data), which a fresh clone may lack. A
 * suite that needs the shared data says why it is skipped where it is absent,
 * and under CI=true fails instead, since CI has it.
 */
import * as fs from "node:fs"
import * as path from "node:path"

const repoRoot = path.resolve(import.meta.dirname, "../..")

export const repoStories = path.join(repoRoot, "pipelines/data/stories260K")
export const storiesBin = path.join(repoStories, "stories260K.bin")
export const tok512Bin = path.join(repoStories, "tok512.bin")
export const sharedDir = path.resolve(repoRoot, "../shared/data")

/** Whether `files` exist; where not, prints why `what` is skipped, or throws under CI=true. */
export const haveShared = (what: string, ...files: ReadonlyArray<string>): boolean => {
  const missing = files.filter((f) => !fs.existsSync(f))
  if (missing.length === 0) return true
  const why = `${what}: ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} missing (the shared data lives in ../shared/data)`
  if (process.env.CI === "true") throw new Error(`CI=true and ${why}`)
  process.stderr.write(`skipping ${why}\n`)
  return false
}
