/**
 * Minimal globbing for source specs: `*`, `?`, `**` (any depth), `{a,b}` and
 * `[abc]`. A pattern is split into its static directory prefix and the rest,
 * and only that prefix is walked.
 */
import * as fs from "node:fs"
import * as path from "node:path"

export const hasMagic = (p: string) => /[*?[{]/.test(p)

export const globToRegExp = (glob: string): RegExp => {
  let re = ""
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === "*") {
      if (glob[i + 1] === "*") {
        const slash = glob[i + 2] === "/"
        re += slash ? "(?:.*/)?" : ".*"
        i += slash ? 2 : 1
      } else re += "[^/]*"
    } else if (c === "?") re += "[^/]"
    else if (c === "{") {
      const end = glob.indexOf("}", i)
      if (end < 0) re += "\\{"
      else {
        re += `(?:${glob
          .slice(i + 1, end)
          .split(",")
          .map((s) => s.replace(/[.+^$()|\\]/g, "\\$&").replace(/\*/g, "[^/]*"))
          .join("|")})`
        i = end
      }
    } else if (c === "[") {
      const end = glob.indexOf("]", i)
      if (end < 0) re += "\\["
      else {
        re += glob.slice(i, end + 1)
        i = end
      }
    } else re += c.replace(/[.+^$()|\\\]}]/g, "\\$&")
  }
  return new RegExp(`^${re}$`)
}

/** The directory a glob starts from: its longest leading run of segments without magic. */
export const staticPrefix = (pattern: string): string => {
  const parts = pattern.split("/")
  const out: string[] = []
  for (const p of parts.slice(0, -1)) {
    if (hasMagic(p)) break
    out.push(p)
  }
  return out.join("/") || "."
}

/** Files matching an absolute glob pattern, sorted. */
export const glob = (absPattern: string): string[] => {
  const pattern = absPattern.split(path.sep).join("/")
  const base = staticPrefix(pattern)
  const re = globToRegExp(pattern)
  const out: string[] = []
  const walk = (dir: string) => {
    let entries: fs.Dirent[]
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true })
    } catch {
      return
    }
    for (const d of entries) {
      const p = `${dir}/${d.name}`
      if (d.isDirectory()) {
        if (d.name === ".tunegraph" || d.name === "node_modules" || d.name === ".git") continue
        walk(p)
      } else if ((d.isFile() || d.isSymbolicLink()) && re.test(p)) out.push(p)
    }
  }
  walk(base)
  return out.sort()
}
