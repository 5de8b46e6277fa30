/**
 * The step key: the one place a cache key is built.
 *
 *   key = sha256(canonicalJson({ plugin, version, fingerprint, params, inputs, environment? }))
 *
 * `params` are the decoded parameters with every default filled, encoded back
 * through the plugin's Schema; `inputs` maps each input name to the digest of
 * the artifact wired into it (a list of digests for a many-input). Names are
 * keys of both objects, so adding or removing a parameter or an edge changes
 * the key. Upstream *output digests* are used, never upstream keys: a step
 * that re-runs and yields the same bytes leaves its dependants cached.
 * `environment` names what a step computes with beyond its code: the backend
 * it resolved to (torch-cuda, wasm...), its device, and the versions of the
 * libraries it loads (`python:torch`, `npm:tokenizers`). It enters the key
 * only when a plugin declares one, so other keys are unchanged by it.
 */
import { createHash } from "node:crypto"
import { canonicalJson } from "./Canonical.ts"

export interface KeyIngredients {
  readonly plugin: string
  readonly version: string
  readonly fingerprint: string
  readonly params: Readonly<Record<string, unknown>>
  readonly inputs: Readonly<Record<string, string | ReadonlyArray<string>>>
  readonly environment?: Readonly<Record<string, string>>
}

export const KEY_FORMAT = "tunegraph-step-key/1"

export const stepKey = (ingredients: KeyIngredients): string =>
  createHash("sha256")
    .update(
      canonicalJson({
        format: KEY_FORMAT,
        plugin: ingredients.plugin,
        version: ingredients.version,
        fingerprint: ingredients.fingerprint,
        params: ingredients.params,
        inputs: ingredients.inputs,
        ...(ingredients.environment !== undefined && Object.keys(ingredients.environment).length > 0
          ? { environment: ingredients.environment }
          : {}),
      }),
    )
    .digest("hex")

/**
 * The recipe of a chunked step's per-chunk work (core/Chunks.ts): its key's
 * ingredients with the `chunked` inputs left out, since each chunk brings its
 * own digest. Everything else that would change the step's result (plugin,
 * code, params, environment, other inputs) still counts.
 */
export const chunkRecipe = (
  ingredients: KeyIngredients,
  chunked: ReadonlyArray<string>,
  unused: ReadonlyArray<string> = [],
): string =>
  createHash("sha256")
    .update(
      `tunegraph-chunk-recipe/1\n${stepKey({
        ...ingredients,
        params: Object.fromEntries(Object.entries(ingredients.params).filter(([k]) => !unused.includes(k))),
        inputs: Object.fromEntries(Object.entries(ingredients.inputs).filter(([k]) => !chunked.includes(k))),
      })}`,
    )
    .digest("hex")

export type KeyDifference =
  | { readonly ingredient: "plugin"; readonly from: string; readonly to: string }
  | { readonly ingredient: "version"; readonly from: string; readonly to: string }
  | { readonly ingredient: "fingerprint"; readonly from: string; readonly to: string }
  | { readonly ingredient: "param"; readonly name: string; readonly from: unknown; readonly to: unknown }
  | { readonly ingredient: "input"; readonly name: string; readonly from: unknown; readonly to: unknown }
  | {
      readonly ingredient: "environment"
      readonly name: string
      readonly from: string | undefined
      readonly to: string | undefined
    }

/** Which ingredients differ between two keys' recipes: what `plan` prints to explain a miss. */
export const diffIngredients = (before: KeyIngredients, after: KeyIngredients): KeyDifference[] => {
  const out: KeyDifference[] = []
  if (before.plugin !== after.plugin)
    out.push({ ingredient: "plugin", from: before.plugin, to: after.plugin })
  if (before.version !== after.version)
    out.push({ ingredient: "version", from: before.version, to: after.version })
  if (before.fingerprint !== after.fingerprint)
    out.push({ ingredient: "fingerprint", from: before.fingerprint, to: after.fingerprint })
  for (const name of union(Object.keys(before.params), Object.keys(after.params))) {
    const a = before.params[name]
    const b = after.params[name]
    if (canonicalOrUndefined(a) !== canonicalOrUndefined(b))
      out.push({ ingredient: "param", name, from: a, to: b })
  }
  for (const name of union(Object.keys(before.inputs), Object.keys(after.inputs))) {
    const a = before.inputs[name]
    const b = after.inputs[name]
    if (canonicalOrUndefined(a) !== canonicalOrUndefined(b))
      out.push({ ingredient: "input", name, from: a, to: b })
  }
  const envA = before.environment ?? {}
  const envB = after.environment ?? {}
  for (const name of union(Object.keys(envA), Object.keys(envB)))
    if (envA[name] !== envB[name])
      out.push({ ingredient: "environment", name, from: envA[name], to: envB[name] })
  return out
}

const union = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => [...new Set([...a, ...b])].sort()
const canonicalOrUndefined = (v: unknown) => (v === undefined ? undefined : canonicalJson(v))

/** "backend wasm -> torch-cpu", "dependency torch 2.13.0 -> 2.14.0": an environment difference as plan prints it. */
export const describeEnvironmentChange = (
  d: Extract<KeyDifference, { ingredient: "environment" }>,
): string => {
  const colon = d.name.indexOf(":")
  const what = colon < 0 ? d.name : `dependency ${d.name.slice(colon + 1)}`
  return `${what} ${d.from ?? "(none)"} -> ${d.to ?? "(none)"}`
}
