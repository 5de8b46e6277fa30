/**
 * tunegraph: typed, content-addressed, incremental pipelines for LLM fine-tuning.
 *
 *   import { Pipeline, ingest, dedupe, split, tokenize, trainLora } from "tunegraph"
 */
export { Effect, Schema } from "effect"
export * from "./core/index.ts"
export * from "./plugins/index.ts"
