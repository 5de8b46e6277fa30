/**
 * Integrity check of a store: SQLite's own check, every cache entry and
 * recorded output and chunk entry pointing at an artifact row, and every
 * artifact's object (chunk results included) present with the recorded
 * bytes (re-hashed).
 */
import * as fs from "node:fs"
import { hashDirSync, hashFileSync } from "../core/Hash.ts"
import type { Store } from "./Store.ts"

export interface VerifyReport {
  readonly objects: number
  readonly bytes: number
  readonly problems: ReadonlyArray<string>
  /** Of a store with its objects in a bucket: those checked there by size, not in this machine's cache to re-hash. */
  readonly sizeChecked?: number
}

export const verifyStore = (store: Store): VerifyReport => {
  const problems: string[] = []
  if (!store.shared) {
    const ic = store.sqlite.pragma("integrity_check", { simple: true })
    if (ic !== "ok") problems.push(`sqlite integrity_check: ${String(ic)}`)
  }
  const dangling = store.db
    .prepare(
      `SELECT o.digest FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
       WHERE e.status = 'ran' AND e.plugin != 'source' AND o.digest NOT IN (SELECT digest FROM artifacts)`,
    )
    .all() as Array<{ digest: string }>
  for (const d of dangling) problems.push(`output ${d.digest} has no artifact row`)
  // A cached execution's history (times, logs, metrics) lives on the one it points at.
  const orphans = store.db
    .prepare(
      "SELECT id, produced_by FROM executions WHERE produced_by IS NOT NULL AND produced_by NOT IN (SELECT id FROM executions)",
    )
    .all() as Array<{ id: number; produced_by: number }>
  for (const o of orphans)
    problems.push(`execution ${o.id} points at execution ${o.produced_by}, which is gone`)
  for (const row of store.db.prepare("SELECT step_key, outputs FROM step_cache").all() as Array<{
    step_key: string
    outputs: string
  }>)
    for (const [name, digest] of Object.entries(JSON.parse(row.outputs) as Record<string, string>))
      if (store.artifact(digest) === undefined)
        problems.push(`cache entry ${row.step_key} output ${name}: no artifact ${digest}`)
  for (const row of store.db
    .prepare("SELECT chunk_key, digest FROM chunks WHERE digest NOT IN (SELECT digest FROM artifacts)")
    .all() as Array<{ chunk_key: string; digest: string }>)
    problems.push(`chunk entry ${row.chunk_key}: no artifact ${row.digest}`)
  let objects = 0
  let bytes = 0
  let remoteOnly = 0
  for (const a of store.db.prepare("SELECT digest, is_dir, size FROM artifacts").all() as Array<{
    digest: string
    is_dir: number
    size: number
  }>) {
    objects++
    const p = store.objectPath(a.digest)
    if (store.remote !== undefined) {
      // A bucket: every object there with its files' sizes; the copies in this machine's cache re-hashed.
      if (!store.remoteIntact(a.digest)) {
        problems.push(`object ${a.digest} is missing from ${store.remote.where}`)
        continue
      }
      if (!fs.existsSync(p)) {
        remoteOnly++
        bytes += a.size
        continue
      }
    } else if (!fs.existsSync(p)) {
      problems.push(`object ${a.digest} is missing`)
      continue
    }
    const h = a.is_dir === 1 ? hashDirSync(p) : hashFileSync(p)
    bytes += h.size
    if (h.digest !== a.digest)
      problems.push(`object ${a.digest} is damaged: its content hashes to ${h.digest}`)
    else if (h.size !== a.size) problems.push(`object ${a.digest}: size ${h.size}, recorded ${a.size}`)
  }
  return { objects, bytes, problems, ...(store.remote === undefined ? {} : { sizeChecked: remoteOnly }) }
}
