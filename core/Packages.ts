/**
 * The installed version of an npm package, read from node_modules/<name>/package.json
 * looked up from this module upward (the copy Node would load). Cached: a
 * no-op run reads each package.json once.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
const versions = new Map<string, string | undefined>()

export const installedVersion = (name: string): string | undefined => {
  if (versions.has(name)) return versions.get(name)
  let found: string | undefined
  for (let dir = here; ; dir = path.dirname(dir)) {
    const file = path.join(dir, "node_modules", name, "package.json")
    if (fs.existsSync(file)) {
      try {
        found = (JSON.parse(fs.readFileSync(file, "utf8")) as { version?: string }).version
      } catch {
        found = undefined
      }
      break
    }
    if (path.dirname(dir) === dir) break
  }
  versions.set(name, found)
  return found
}

/** `npm:<name>` -> version for the packages installed; a package that is absent is left out. */
export const npmEnvironment = (names: ReadonlyArray<string>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const n of names) {
    const v = installedVersion(n)
    if (v !== undefined) out[`npm:${n}`] = v
  }
  return out
}
