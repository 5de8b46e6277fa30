/** Where the store is: --store, then TUNEGRAPH_STORE, then `.tunegraph/` at the project root. */
import * as fs from "node:fs"
import * as path from "node:path"

/** The nearest directory at or above `from` holding a package.json or a .git, else `from` itself. */
export const projectRoot = (from: string): string => {
  let dir = path.resolve(from)
  for (;;) {
    if (fs.existsSync(path.join(dir, "package.json")) || fs.existsSync(path.join(dir, ".git"))) return dir
    const up = path.dirname(dir)
    if (up === dir) return path.resolve(from)
    dir = up
  }
}

export const storeDir = (flag: string | undefined, pipelineFile?: string): string => {
  if (flag !== undefined) return path.resolve(flag)
  const env = process.env.TUNEGRAPH_STORE
  if (env !== undefined && env !== "") return path.resolve(env)
  if (pipelineFile !== undefined)
    return path.join(projectRoot(path.dirname(path.resolve(pipelineFile))), ".tunegraph")
  // Without a pipeline: the nearest .tunegraph above the working directory, else the project root's.
  let dir = process.cwd()
  for (;;) {
    if (fs.existsSync(path.join(dir, ".tunegraph", "db.sqlite"))) return path.join(dir, ".tunegraph")
    const up = path.dirname(dir)
    if (up === dir) break
    dir = up
  }
  return path.join(projectRoot(process.cwd()), ".tunegraph")
}
