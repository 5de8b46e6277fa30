/**
 * The directory an export writes, outside the store. Three promises:
 *
 * - It writes only there. `to` may not hold a `..` segment, may not be the
 *   working directory or one of its parents, may not be a symbolic link, and
 *   a relative `to` may not lead out of the working directory through a
 *   symbolic link on the way.
 * - It replaces only its own directories: one holding `tunegraph-export.json`
 *   and nothing but the files that marker lists, or an empty one. Anything
 *   else needs `overwrite: true`.
 * - The directory appears whole or not at all: the files go to a sibling
 *   temporary directory, which is renamed into place. Replacing an existing
 *   directory takes two renames (old out, new in); a crash between them
 *   leaves the old one beside the target as `.<name>.old-*`.
 *
 * A relative `to` is resolved against the process's working directory (where
 * `tunegraph run` was started), since a step does not know where the pipeline
 * file is.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

export const MARKER = "tunegraph-export.json"

/** What an export directory says about itself. */
export interface Marker {
  /** Digest of the artifact exported (the adapter, or the model when there is no adapter). */
  readonly artifact: string
  /** The pipeline node that wrote it. */
  readonly node: string
  readonly kind: "peft-adapter" | "merged-model"
  /** The other files of the directory, sorted. */
  readonly files: ReadonlyArray<string>
  /** The base model's digest, for a merged model. */
  readonly base?: string
}

export class TargetError extends Error {
  override readonly name = "TargetError"
}

const inside = (child: string, parent: string): boolean => {
  const rel = path.relative(parent, child)
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel))
}

/** The deepest existing directory on the way to `p`, and the names below it. */
const existingAncestor = (p: string): { dir: string; rest: string[] } => {
  const rest: string[] = []
  let cur = p
  for (;;) {
    const parent = path.dirname(cur)
    try {
      fs.statSync(cur)
      return { dir: cur, rest }
    } catch {
      if (parent === cur) return { dir: cur, rest }
      rest.unshift(path.basename(cur))
      cur = parent
    }
  }
}

/**
 * Resolves `to` against `cwd` and checks that writing there cannot reach
 * anything else. Returns the absolute target, with symbolic links of its
 * parent resolved.
 */
export const resolveTarget = (to: string, cwd: string = process.cwd()): string => {
  if (to.trim() === "") throw new TargetError(`"to" is empty: name the directory to export into`)
  if (to.includes("\0")) throw new TargetError(`"to" holds a NUL character`)
  if (to.split(/[\\/]+/).includes(".."))
    throw new TargetError(`"to" (${to}) holds a ".." segment; name the directory without it`)
  const abs = path.resolve(cwd, to)
  if (path.parse(abs).root === abs) throw new TargetError(`"to" (${to}) is the file system root`)
  const realCwd = fs.realpathSync(cwd)
  // The parent's real location: a symbolic link on the way must not lead elsewhere.
  const { dir, rest } = existingAncestor(path.dirname(abs))
  const realParent = path.join(fs.realpathSync(dir), ...rest)
  const target = path.join(realParent, path.basename(abs))
  if (!path.isAbsolute(to) && !inside(target, realCwd))
    throw new TargetError(
      `"to" (${to}) leads out of the working directory ${cwd} through a symbolic link (to ${target})`,
    )
  if (inside(realCwd, target) || inside(cwd, abs))
    throw new TargetError(
      `"to" (${to}) is the working directory or one of its parents: it cannot be replaced`,
    )
  return target
}

export type TargetState = { readonly exists: false } | { readonly exists: true; readonly ours: boolean }

/** Reads a marker file; undefined when it is absent or not ours. */
export const readMarker = (dir: string): Marker | undefined => {
  const file = path.join(dir, MARKER)
  let json: unknown
  try {
    if (fs.lstatSync(file).isSymbolicLink()) return undefined
    json = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
  const m = json as Partial<Marker>
  if (
    typeof m !== "object" ||
    m === null ||
    typeof m.artifact !== "string" ||
    typeof m.node !== "string" ||
    typeof m.kind !== "string" ||
    !Array.isArray(m.files) ||
    !m.files.every((f) => typeof f === "string")
  )
    return undefined
  return m as Marker
}

/**
 * Whether `target` may be written: absent, or an export directory holding
 * only what its marker lists, or an empty directory; anything else only with
 * `overwrite`. A symbolic link never.
 */
export const checkTarget = (target: string, overwrite: boolean): TargetState => {
  let st: fs.Stats
  try {
    st = fs.lstatSync(target)
  } catch {
    return { exists: false }
  }
  if (st.isSymbolicLink())
    throw new TargetError(
      `${target} is a symbolic link: refusing to write through it; remove it or choose another "to"`,
    )
  if (!st.isDirectory()) {
    if (overwrite) return { exists: true, ours: false }
    throw new TargetError(`${target} exists and is not a directory; set overwrite: true to replace it`)
  }
  const entries = fs.readdirSync(target)
  if (entries.length === 0) return { exists: true, ours: true }
  const marker = readMarker(target)
  if (marker !== undefined) {
    const known = new Set([...marker.files, MARKER])
    const foreign = entries.filter((e) => !known.has(e)).sort()
    if (foreign.length === 0) return { exists: true, ours: true }
    if (overwrite) return { exists: true, ours: false }
    throw new TargetError(
      `${target} holds files the export did not write (${foreign.slice(0, 5).join(", ")}${foreign.length > 5 ? ", ..." : ""}); move them away or set overwrite: true`,
    )
  }
  if (overwrite) return { exists: true, ours: false }
  throw new TargetError(
    `${target} exists and was not written by an export (no ${MARKER}); set overwrite: true to replace it, or choose another "to"`,
  )
}

const fsyncPath = (p: string) => {
  let fd: number | undefined
  try {
    fd = fs.openSync(p, "r")
    fs.fsyncSync(fd)
  } catch {
    // Some file systems refuse to fsync a directory; the rename is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
}

const suffix = () => randomBytes(4).toString("hex")

/**
 * Copies the flat directory `source` to `target` atomically (see above),
 * after `checkTarget`. Files are fsynced before the rename.
 */
export const publishDirectory = (source: string, target: string, overwrite: boolean): TargetState => {
  const state = checkTarget(target, overwrite)
  const parent = path.dirname(target)
  const name = path.basename(target)
  fs.mkdirSync(parent, { recursive: true })
  const tmp = fs.mkdtempSync(path.join(parent, `.${name}.tmp-`))
  try {
    for (const entry of fs.readdirSync(source, { withFileTypes: true })) {
      if (!entry.isFile()) throw new TargetError(`${path.join(source, entry.name)} is not a plain file`)
      const dest = path.join(tmp, entry.name)
      fs.copyFileSync(path.join(source, entry.name), dest)
      // A copy of a read-only object in the store is the user's to edit.
      fs.chmodSync(dest, 0o644)
      fsyncPath(dest)
    }
    fsyncPath(tmp)
    if (state.exists) {
      // Checked again just before the swap: the target may have changed meanwhile.
      checkTarget(target, overwrite)
      const old = path.join(parent, `.${name}.old-${suffix()}`)
      fs.renameSync(target, old)
      try {
        fs.renameSync(tmp, target)
      } catch (e) {
        fs.renameSync(old, target)
        throw e
      }
      fs.rmSync(old, { recursive: true, force: true })
    } else fs.renameSync(tmp, target)
    fsyncPath(parent)
    return state
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true })
    throw e
  }
}

/** Writes the marker into an export directory being prepared; `files` are the others there. */
export const writeMarker = (dir: string, marker: Omit<Marker, "files">): Marker => {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f !== MARKER)
    .sort()
  const full: Marker = { ...marker, files }
  const ordered = {
    artifact: full.artifact,
    ...(full.base === undefined ? {} : { base: full.base }),
    files: full.files,
    kind: full.kind,
    node: full.node,
  }
  fs.writeFileSync(path.join(dir, MARKER), `${JSON.stringify(ordered, null, 2)}\n`)
  return full
}
