/**
 * gc against a concurrent run, interleaved deterministically: a run that
 * finds its object already present (left without a row, so gc is free to
 * delete it) must never end with a row pointing at a missing object.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { collectGarbage, gcHooks } from "../../cache/Gc.ts"
import { type ExecutionRecord, Store, type StoredObject } from "../../cache/Store.ts"
import { verifyStore } from "../../cache/Verify.ts"
import { tempDir } from "../support/cli.ts"

const output = (store: Store, dir: boolean) => {
  const src = path.join(store.makeTmp("out"), "o")
  if (dir) {
    fs.mkdirSync(path.join(src, "sub"), { recursive: true })
    fs.writeFileSync(path.join(src, "a.txt"), "same bytes")
    fs.writeFileSync(path.join(src, "sub/b.txt"), "b")
  } else fs.writeFileSync(src, "same bytes")
  return src
}

const exec = (runId: string, obj: StoredObject): ExecutionRecord => ({
  runId,
  node: "n",
  plugin: "p",
  version: "1",
  fingerprint: "f",
  key: "k",
  status: "ran",
  startedAt: Date.now(),
  finishedAt: Date.now(),
  ms: 0,
  outputs: [{ name: "out", digest: obj.digest }],
  cache: true,
})

const setup = (dir: boolean) => {
  const store = Store.open(path.join(tempDir("gc-race"), ".tunegraph"))
  // An earlier run killed between its rename into objects/ and its transaction: an object with no row.
  const orphan = store.putObject(output(store, dir))
  expect(fs.existsSync(store.objectPath(orphan.digest))).toBe(true)
  store.beginRun({ id: "r", pipeline: "p", pipelinePath: "/p.ts", argv: [] })
  expect(store.tryLease("k", "r").ok).toBe(true)
  return store
}

/** Waits until the object's ctime is in the past at gc's millisecond resolution, so gc (no grace) sees it as old. */
const aged = (store: Store, digest: string) => {
  const ctime = fs.lstatSync(store.objectPath(digest)).ctimeMs
  while (Date.now() <= ctime + 1) {}
}

const consistent = (store: Store, digest: string) => {
  expect(fs.existsSync(store.objectPath(digest)), "the object a row points at").toBe(true)
  expect(store.objectIntact(digest)).toBe(true)
  expect(verifyStore(store).problems).toEqual([])
}

describe.each([false, true])("gc and a run committing the same object (directory: %s)", (dir) => {
  it("gc deletes the object between the run's putObject and its record: the run puts it back", () => {
    const store = setup(dir)
    // The run: outputs hashed, the object found present.
    const obj = store.putObject(output(store, dir))
    expect(obj.spare).toBeDefined()
    // gc: the object has no row yet, so it goes (no grace: an old orphan).
    aged(store, obj.digest)
    const report = collectGarbage(store, { keepLast: 10, graceMs: 0 })
    expect(report.deleted.garbageObjects).toBe(1)
    expect(fs.existsSync(store.objectPath(obj.digest))).toBe(false)
    // The run: its rows; the object is back, the spare used.
    store.record(exec("r", obj), [{ object: obj, kind: "Text", meta: null }])
    consistent(store, obj.digest)
    expect(fs.existsSync(obj.spare!)).toBe(false)
    store.close()
  })

  it("the run records while gc has the object moved away: the run puts it back, gc drops its moved copy", () => {
    const store = setup(dir)
    const obj = store.putObject(output(store, dir))
    const original = gcHooks.afterMove
    let interleaved = false
    gcHooks.afterMove = (digest) => {
      if (digest !== obj.digest) return
      interleaved = true
      expect(fs.existsSync(store.objectPath(obj.digest))).toBe(false)
      store.record(exec("r", obj), [{ object: obj, kind: "Text", meta: null }])
    }
    try {
      aged(store, obj.digest)
      const report = collectGarbage(store, { keepLast: 10, graceMs: 0 })
      expect(report.deleted.garbageObjects).toBe(0)
    } finally {
      gcHooks.afterMove = original
    }
    expect(interleaved).toBe(true)
    consistent(store, obj.digest)
    expect(fs.readdirSync(store.tmpDir).filter((n) => n.includes("-gc-"))).toEqual([])
    store.close()
  })

  it("the run records before gc looks: gc keeps the object, and the spare is dropped", () => {
    const store = setup(dir)
    const obj = store.putObject(output(store, dir))
    store.record(exec("r", obj), [{ object: obj, kind: "Text", meta: null }])
    expect(fs.existsSync(obj.spare!)).toBe(false)
    const report = collectGarbage(store, { keepLast: 10, graceMs: 0 })
    expect(report.deleted.garbageObjects).toBe(0)
    consistent(store, obj.digest)
    store.close()
  })
})
