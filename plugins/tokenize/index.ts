/**
 * tokenize: canonical records to training sequences. Renders each record
 * with a prompt format, tokenizes it (Hugging Face tokenizer.json or
 * llama2.c tok*.bin), masks the prompt from the loss, appends EOS, applies an
 * explicit policy to examples longer than maxLength, optionally packs short
 * examples, and writes the Tokens layout plus a report of lengths and overflow.
 *
 * This module loads nothing heavy: the work lives in Run.ts, imported when
 * the step runs.
 */
import { Effect, Schema } from "effect"
import { definePlugin, withDefault } from "../../core/Plugin.ts"
import { Records, Report, Tokenizer, Tokens } from "../kinds.ts"

export const TokenizeParams = Schema.Struct({
  /** Prompt format: "alpaca", "chatml", the tokenizer's own "chat_template", or "none" (prompt then completion as they are). */
  template: Schema.Literals(["alpaca", "chatml", "chat_template", "none"]).pipe(withDefault("alpaca")),
  /**
   * Variables for the chat template, as apply_chat_template's keyword arguments: `{ enable_thinking: false }`
   * (Qwen3), `{ date_string: "26 Jul 2024" }` (Llama 3.x, which otherwise writes today's date).
   */
  templateKwargs: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  /** Longest sequence, in tokens (BOS and EOS included). */
  maxLength: Schema.Int.check(Schema.isGreaterThan(1)).pipe(withDefault(2048)),
  /** What happens to a longer example: cut at maxLength, leave it out, or fail the step listing them. */
  overflow: Schema.Literals(["truncate", "drop", "fail"]).pipe(withDefault("fail")),
  /** Keep prompt tokens in the loss too (by default only responses and EOS are trained). */
  trainOnInputs: Schema.Boolean.pipe(withDefault(false)),
  /** Pack short examples into sequences of maxLength; attention stays inside each example (segments.u32). */
  pack: Schema.Boolean.pipe(withDefault(false)),
  /** Prepend BOS: "auto" follows the tokenizer (llama2.c and add_bos_token: yes; chat templates write their own). */
  addBos: Schema.Union([Schema.Boolean, Schema.Literal("auto")]).pipe(withDefault("auto")),
  /** Append EOS (kept in the loss) so the model learns to stop. */
  addEos: Schema.Boolean.pipe(withDefault(true)),
  /** Rendered examples shown in the report, so the prompt format can be checked by eye. */
  samples: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(withDefault(3)),
})
export type TokenizeParams = typeof TokenizeParams.Type

export const tokenizeInputs = { records: Records, tokenizer: Tokenizer }
export const tokenizeOutputs = { tokens: Tokens, report: Report }

export const tokenize = definePlugin({
  name: "tokenize",
  version: 2,
  params: TokenizeParams,
  inputs: tokenizeInputs,
  outputs: tokenizeOutputs,
  resources: { cpu: 2, memoryMb: 512 },
  code: ["plugins/tokenize"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.run(ctx),
    ),
})
