/**
 * A Hugging Face hub cache laid out as huggingface_hub writes it, for tests:
 * blobs/ named by the file's digest (SHA-256, as for LFS files), snapshots/<commit>/
 * holding relative symbolic links into blobs/, refs/<name> holding the commit.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/** Adds a snapshot of `files` (path in the repo -> file on disk) and points `refs` at it; returns its commit. */
export const addSnapshot = (
  cache: string,
  repo: string,
  files: Readonly<Record<string, string>>,
  refs: ReadonlyArray<string> = ["main"],
): string => {
  const repoDir = path.join(cache, `models--${repo.split("/").join("--")}`)
  const commit = createHash("sha1")
    .update(JSON.stringify(Object.entries(files).map(([p, f]) => [p, fs.readFileSync(f).toString("base64")])))
    .digest("hex")
  for (const [rel, src] of Object.entries(files)) {
    const bytes = fs.readFileSync(src)
    const blob = path.join(repoDir, "blobs", createHash("sha256").update(bytes).digest("hex"))
    fs.mkdirSync(path.dirname(blob), { recursive: true })
    if (!fs.existsSync(blob)) fs.writeFileSync(blob, bytes)
    const link = path.join(repoDir, "snapshots", commit, rel)
    fs.mkdirSync(path.dirname(link), { recursive: true })
    fs.symlinkSync(path.relative(path.dirname(link), blob), link)
  }
  for (const ref of refs) {
    const file = path.join(repoDir, "refs", ref)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, commit)
  }
  return commit
}

/** Every file of a directory (not recursive), as addSnapshot takes them. */
export const filesOf = (dir: string): Record<string, string> =>
  Object.fromEntries(fs.readdirSync(dir).map((f) => [f, path.join(dir, f)]))
