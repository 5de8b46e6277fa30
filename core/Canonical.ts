/**
 * Canonical JSON: the one byte encoding of a value that goes into a step key.
 * Object keys are sorted, `undefined` members are dropped, numbers use
 * JavaScript's shortest round-trip form, and functions (custom scorers given
 * in a pipeline file) are represented by the SHA-256 of their source text, or,
 * for a function loaded from a pipeline file, of its source and the top-level
 * declarations it uses (core/FunctionDeps.ts, registered by core/Loader.ts).
 */
import { createHash } from "node:crypto"

// biome-ignore lint/complexity/noBannedTypes: any function given as a parameter
const fingerprints = new WeakMap<Function, string>()

/** What a function stands for in a key: the hash of its source and what it depends on. */
// biome-ignore lint/complexity/noBannedTypes: any function given as a parameter
export const setFunctionFingerprint = (fn: Function, digest: string) => {
  fingerprints.set(fn, digest)
}

export const canonicalJson = (value: unknown): string => {
  if (value === null) return "null"
  switch (typeof value) {
    case "string":
      return JSON.stringify(value)
    case "boolean":
      return value ? "true" : "false"
    case "number":
      if (!Number.isFinite(value))
        throw new TypeError(`cannot encode non-finite number ${value} in a step key`)
      return Object.is(value, -0) ? "0" : String(value)
    case "bigint":
      return `${value}`
    case "function":
      return `{"$fn":${JSON.stringify(fingerprints.get(value) ?? createHash("sha256").update(value.toString()).digest("hex"))}}`
    case "object": {
      if (Array.isArray(value))
        return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(",")}]`
      if (value instanceof Uint8Array)
        return `{"$bytes":${JSON.stringify(Buffer.from(value).toString("base64"))}}`
      if (value instanceof Date) return JSON.stringify(value.toISOString())
      if (value instanceof RegExp) return `{"$regex":${JSON.stringify(value.toString())}}`
      const keys = Object.keys(value).sort()
      const parts: string[] = []
      for (const k of keys) {
        const v = (value as Record<string, unknown>)[k]
        if (v === undefined) continue
        parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`)
      }
      return `{${parts.join(",")}}`
    }
    default:
      throw new TypeError(`cannot encode ${typeof value} in a step key`)
  }
}
