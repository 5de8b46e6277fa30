/** Objects in the store: read-only all the way down, and durable before anything points at them. */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { durability, Store } from "../../cache/Store.ts"
import { tempDir } from "../support/cli.ts"

const original = durability.fsyncDir
afterEach(() => {
  durability.fsyncDir = original
})

const output = (store: Store) => {
  const src = path.join(store.makeTmp("t"), "out")
  fs.mkdirSync(path.join(src, "sub/deeper"), { recursive: true })
  fs.writeFileSync(path.join(src, "a.txt"), "a")
  fs.writeFileSync(path.join(src, "sub/b.txt"), "b")
  fs.writeFileSync(path.join(src, "sub/deeper/c.txt"), "c")
  return src
}

describe("directory objects", () => {
  it("are read-only directories as well as files", () => {
    const store = Store.open(path.join(tempDir("objects"), ".tunegraph"))
    const obj = store.putObject(output(store))
    const root = store.objectPath(obj.digest)
    for (const d of [root, path.join(root, "sub"), path.join(root, "sub/deeper")])
      expect((fs.statSync(d).mode & 0o777).toString(8), d).toBe("555")
    for (const f of ["a.txt", "sub/b.txt", "sub/deeper/c.txt"])
      expect((fs.statSync(path.join(root, f)).mode & 0o777).toString(8), f).toBe("444")
    store.close()
  })

  it("fsync every directory they create: their own, the shard's and objects/ for a new shard", () => {
    const store = Store.open(path.join(tempDir("objects"), ".tunegraph"))
    const synced: string[] = []
    durability.fsyncDir = (d) => {
      synced.push(d)
      original(d)
    }
    const src = output(store)
    const obj = store.putObject(src)
    const dest = store.objectPath(obj.digest)
    expect(synced).toContain(store.objectsDir)
    expect(synced).toContain(path.dirname(dest))
    // Inner directories before the rename publishes them (then they lived under src).
    expect(synced).toContain(path.join(src, "sub"))
    expect(synced).toContain(path.join(src, "sub/deeper"))
    expect(synced).toContain(src)
    expect(synced.indexOf(path.join(src, "sub/deeper"))).toBeLessThan(synced.indexOf(src))
    store.close()
  })
})
