import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Store } from "../../cache/Store.ts"
import { canonicalJson } from "../../core/Canonical.ts"
import { hashDirSync, hashFileSync } from "../../core/Hash.ts"
import { fileDigest } from "../../core/Sources.ts"
import {
  describeEnvironmentChange,
  diffIngredients,
  type KeyDifference,
  stepKey,
} from "../../core/StepKey.ts"
import { sha256sum, tempDir } from "../support/cli.ts"

const base = {
  plugin: "upper",
  version: "1",
  fingerprint: "abc",
  params: { times: 1, mode: "a" },
  inputs: { text: "0".repeat(64) },
}

describe("step keys", () => {
  it("are independent of key order and change with every ingredient, names included", () => {
    const k = stepKey(base)
    expect(stepKey({ ...base, params: { mode: "a", times: 1 } })).toBe(k)
    expect(stepKey({ ...base, version: "2" })).not.toBe(k)
    expect(stepKey({ ...base, fingerprint: "abd" })).not.toBe(k)
    expect(stepKey({ ...base, params: { times: 2, mode: "a" } })).not.toBe(k)
    expect(stepKey({ ...base, params: { ...base.params, extra: 0 } })).not.toBe(k)
    expect(stepKey({ ...base, inputs: { other: "0".repeat(64) } })).not.toBe(k)
    expect(stepKey({ ...base, inputs: { ...base.inputs, notes: "1".repeat(64) } })).not.toBe(k)
  })

  it("canonical JSON sorts keys, drops undefined and hashes functions by source", () => {
    expect(canonicalJson({ b: 1, a: [1, "x", null], c: undefined })).toBe('{"a":[1,"x",null],"b":1}')
    const f = (s: string) => s.length
    expect(canonicalJson({ f })).toMatch(/^\{"f":\{"\$fn":"[0-9a-f]{64}"\}\}$/)
    expect(() => canonicalJson({ x: Number.NaN })).toThrow(/non-finite/)
  })

  it("explains which ingredients differ", () => {
    const d = diffIngredients(base, { ...base, version: "2", params: { times: 3, mode: "a" } })
    expect(d).toEqual([
      { ingredient: "version", from: "1", to: "2" },
      { ingredient: "param", name: "times", from: 1, to: 3 },
    ])
  })
})

describe("the environment ingredient", () => {
  const env = { backend: "torch-cpu", device: "cpu", "python:torch": "2.13.0", "python:peft": "0.21.2" }
  const withEnv = { ...base, environment: env }
  const described = (ds: KeyDifference[]) =>
    ds.map((d) => (d.ingredient === "environment" ? describeEnvironmentChange(d) : d.ingredient))

  it("changes the key when a library version or the backend differs, and plan says which", () => {
    const k = stepKey(withEnv)
    expect(k).not.toBe(stepKey(base))
    // No environment and an empty one are the same key: steps without one keep theirs.
    expect(stepKey({ ...base, environment: {} })).toBe(stepKey(base))
    const newer = { ...withEnv, environment: { ...env, "python:torch": "2.14.0" } }
    expect(stepKey(newer)).not.toBe(k)
    expect(diffIngredients(withEnv, newer)).toEqual([
      { ingredient: "environment", name: "python:torch", from: "2.13.0", to: "2.14.0" },
    ])
    expect(described(diffIngredients(withEnv, newer))).toEqual(["dependency torch 2.13.0 -> 2.14.0"])
    const wasm = {
      ...base,
      environment: { backend: "wasm", device: "cpu", "npm:@tensorflow/tfjs-core": "4.22.0" },
    }
    expect(described(diffIngredients(wasm, withEnv))).toEqual([
      "backend wasm -> torch-cpu",
      "dependency @tensorflow/tfjs-core 4.22.0 -> (none)",
      "dependency peft (none) -> 0.21.2",
      "dependency torch (none) -> 2.13.0",
    ])
  })
})

describe("digests", () => {
  it("a file's digest is what sha256sum prints; a directory's hashes its sorted manifest", () => {
    const dir = tempDir("hash")
    fs.writeFileSync(path.join(dir, "b.txt"), "bee")
    fs.mkdirSync(path.join(dir, "sub"))
    fs.writeFileSync(path.join(dir, "sub/a.txt"), "ay")
    expect(hashFileSync(path.join(dir, "b.txt")).digest).toBe(sha256sum(path.join(dir, "b.txt")))
    const d1 = hashDirSync(dir)
    expect(d1.entries.map((e) => e.path)).toEqual(["b.txt", "sub/a.txt"])
    fs.writeFileSync(path.join(dir, "sub/a.txt"), "az")
    expect(hashDirSync(dir).digest).not.toBe(d1.digest)
    fs.chmodSync(path.join(dir, "b.txt"), 0o755)
    fs.writeFileSync(path.join(dir, "sub/a.txt"), "ay")
    expect(hashDirSync(dir).digest).not.toBe(d1.digest)
  })

  it("the stat cache re-hashes files modified within its timestamp granularity", () => {
    const dir = tempDir("stat")
    const store = Store.open(path.join(dir, ".tunegraph"))
    const file = path.join(dir, "data.txt")
    fs.writeFileSync(file, "one")
    const a = fileDigest(store, file)
    expect(a.hashed).toBe(true)
    // Written just now: racy, so it is hashed again, and a same-size rewrite with the same mtime is seen.
    const st = fs.statSync(file)
    fs.writeFileSync(file, "two")
    fs.utimesSync(file, st.atime, st.mtime)
    const b = fileDigest(store, file)
    expect(b.hashed).toBe(true)
    expect(b.digest).not.toBe(a.digest)
    // An old file is trusted from the stat cache.
    const old = new Date(Date.now() - 3600_000)
    fs.utimesSync(file, old, old)
    expect(fileDigest(store, file).hashed).toBe(true)
    expect(fileDigest(store, file).hashed).toBe(false)
    store.close()
  })
})
