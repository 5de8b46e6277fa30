/**
 * What a pipeline file gets when it imports "effect": the engine's own Effect
 * and Schema, so plugins written in a pipeline run on the engine's runtime.
 * Other Effect modules are not re-exported: import them through their own
 * files only in code that does not hand values to the engine.
 */
export { Effect, Schema } from "effect"
