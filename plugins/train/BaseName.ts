/**
 * The name a trainer records of its base model: an adapter's
 * base_model_name_or_path, and a training record's baseName. It is the repo
 * id of an hf() source, or the path of a source as the pipeline wrote it.
 * A base made by another step (a full fine-tune) has no name a user gave it,
 * so the name is left empty rather than naming the original base (which
 * would load the wrong weights) or a path inside the store.
 *
 * The name is in the output's bytes, so it enters the step key (as the
 * environment entry `base`): two sources with the same bytes under
 * different names do not share a cached adapter that names the other.
 */
import type { Artifact } from "../../core/Artifact.ts"
import type { InputArtifacts } from "../../core/Plugin.ts"
import { backendEnvironment } from "./BackendChoice.ts"

export const baseNameOf = (base: Artifact): string => {
  const meta = (typeof base.meta === "object" && base.meta !== null ? base.meta : {}) as {
    hf?: { repo?: unknown }
    pattern?: unknown
    root?: unknown
  }
  if (typeof meta.hf?.repo === "string") return meta.hf.repo
  if (typeof meta.pattern === "string" && typeof meta.root === "string") return meta.pattern
  return ""
}

/** A training step's environment: its backend's, plus the base's name when it has one. */
export const trainEnvironment = (
  p: { readonly backend: string },
  inputs: InputArtifacts,
): Readonly<Record<string, string>> => {
  const base = inputs.base
  const name = base === undefined || Array.isArray(base) ? "" : baseNameOf(base as Artifact)
  return { ...backendEnvironment(p), ...(name === "" ? {} : { base: name }) }
}
