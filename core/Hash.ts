/**
 * Artifact digests. A file's digest is the SHA-256 of its bytes (what
 * `sha256sum` prints). A directory's digest is the SHA-256 of its manifest:
 * one line `path NUL mode NUL sha256 LF` per file, sorted by path bytes,
 * where mode is 755 for executables and 644 otherwise (as git records it).
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

const CHUNK = 8 * 1024 * 1024
let shared: Buffer | undefined

/**
 * SHA-256 of a file, read in large chunks with one reused buffer. `each`
 * sees every block as it is hashed (the buffer is reused: copy what it keeps).
 */
export const hashFileSync = (
  file: string,
  each?: (block: Buffer) => void,
): { digest: string; size: number } => {
  const fd = fs.openSync(file, "r")
  try {
    shared ??= Buffer.allocUnsafe(CHUNK)
    const h = createHash("sha256")
    let size = 0
    for (;;) {
      const n = fs.readSync(fd, shared, 0, CHUNK, null)
      if (n === 0) break
      const block = n === CHUNK ? shared : shared.subarray(0, n)
      h.update(block)
      each?.(block)
      size += n
    }
    return { digest: h.digest("hex"), size }
  } finally {
    fs.closeSync(fd)
  }
}

/** Fills `buf` from byte `position` of an open file; returns how many bytes there were (fewer at its end). */
export const readAt = (fd: number, buf: Uint8Array, position: number): number => {
  let at = 0
  while (at < buf.length) {
    const n = fs.readSync(fd, buf, at, buf.length - at, position + at)
    if (n === 0) break
    at += n
  }
  return at
}

export const hashBytes = (bytes: Uint8Array | string): string =>
  createHash("sha256").update(bytes).digest("hex")

export interface ManifestEntry {
  readonly path: string // relative, forward slashes
  readonly mode: 644 | 755
  readonly digest: string
  readonly size: number
}

export const manifestDigest = (entries: ReadonlyArray<ManifestEntry>): string => {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)))
  const h = createHash("sha256")
  for (const e of sorted) h.update(`${e.path}\0${e.mode}\0${e.digest}\n`)
  return h.digest("hex")
}

/** Every regular file under `dir`, relative paths with forward slashes, sorted. */
export const listFiles = (dir: string): string[] => {
  const out: string[] = []
  const walk = (rel: string) => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel === "" ? d.name : `${rel}/${d.name}`
      if (d.isDirectory()) walk(r)
      else if (d.isFile()) out.push(r)
      else if (d.isSymbolicLink()) {
        const st = fs.statSync(path.join(dir, r))
        if (st.isDirectory()) walk(r)
        else if (st.isFile()) out.push(r)
      }
    }
  }
  walk("")
  return out.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
}

export const modeOf = (st: fs.Stats): 644 | 755 => ((st.mode & 0o111) !== 0 ? 755 : 644)

/**
 * A file whose digest is known without reading it: a hard link to a stored
 * object's file (a reused chunk's part in a step's output), recognised by
 * its device, inode and size.
 */
export interface KnownFile {
  readonly digest: string
  readonly size: number
  readonly dev: number
  readonly ino: number
}

/** Whether `st` is the very file `k` describes (the same inode, so the same bytes). */
export const isKnown = (st: fs.Stats, k: KnownFile | undefined): k is KnownFile =>
  k !== undefined && st.dev === k.dev && st.ino === k.ino && st.size === k.size

export const hashDirSync = (
  dir: string,
  known?: ReadonlyMap<string, KnownFile>,
): { digest: string; size: number; entries: ManifestEntry[]; read: ReadonlyArray<string> } => {
  const entries: ManifestEntry[] = []
  const read: string[] = []
  let size = 0
  for (const rel of listFiles(dir)) {
    const abs = path.join(dir, rel)
    const st = fs.statSync(abs)
    const k = known?.get(abs)
    if (!isKnown(st, k)) read.push(rel)
    const { digest, size: s } = isKnown(st, k) ? k : hashFileSync(abs)
    size += s
    entries.push({ path: rel, mode: modeOf(st), digest, size: s })
  }
  return { digest: manifestDigest(entries), size, entries, read }
}
