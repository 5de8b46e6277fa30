/**
 * eval: the tuned model side by side with its base. The tuned model is the
 * base with an adapter merged in (LoRA; QLoRA into the NF4-dequantised base
 * it trained against) or a fully fine-tuned model. Both are scored on
 *
 * - the test split's tokens: loss (mean NLL of label tokens) and perplexity;
 * - the test records' prompts, rendered with the tokenize step's template and
 *   answered greedily: exact_match, contains, regex (with `regex`) and custom
 *   scorers from the pipeline file (`scorers: { name: (output, reference, record) => number | boolean }`,
 *   keyed into the step by their source and the constants and helpers it uses: core/FunctionDeps.ts).
 *
 * The report is a directory: report.json, report.md and samples.jsonl
 * (Report.ts). Metrics: test_loss and test_perplexity of the tuned model,
 * and tuned/<score>, base/<score> for every score.
 *
 * The backend resolves as training's does (plugins/train/BackendChoice.ts)
 * and enters the step key. On torch the worker process loads both models
 * (the adapter merged by peft) and computes the loss and the greedy
 * answers; tokenizing, stop strings and scoring stay here, so the report
 * has the same shape on either backend.
 *
 * This module loads nothing heavy: the work lives in Run.ts.
 */
import { Effect, Schema } from "effect"
import { optional } from "../../core/Artifact.ts"
import { definePlugin, withDefault } from "../../core/Plugin.ts"
import { Adapter, Model, Records, Report, Tokenizer, Tokens } from "../kinds.ts"
import { backendEnvironment } from "../train/BackendChoice.ts"
import { Backend } from "../train/Params.ts"
import { regexProblem, type ScorerFunction, scorerNameProblem } from "./Scorers.ts"

/** A function given in the pipeline file; it decodes and encodes as itself. */
const Scorer = Schema.declare((u: unknown): u is ScorerFunction => typeof u === "function", {
  title: "(output: string, reference: string, record) => number | boolean",
})
const Regex = Schema.declare((u: unknown): u is RegExp => u instanceof RegExp, { title: "RegExp" })

export const EvalParams = Schema.Struct({
  /** The prompt format ("alpaca", "chatml", "chat_template", "none"); by default the one the test tokens were made with. */
  template: Schema.optionalKey(Schema.Literals(["alpaca", "chatml", "chat_template", "none"])),
  /** Prepend BOS to prompts: "auto" does what the tokenize step did for the test tokens. */
  addBos: Schema.Union([Schema.Boolean, Schema.Literal("auto")]).pipe(withDefault("auto")),
  /** Test records answered (from the first); 0 skips generation. */
  maxExamples: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(withDefault(50)),
  /** Longest answer, in tokens. */
  maxNewTokens: Schema.Int.check(Schema.isGreaterThan(0)).pipe(withDefault(64)),
  /** Test sequences scored for the loss (from the first); 0 means all. */
  maxLossSequences: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(withDefault(0)),
  /** Variables for the chat template, as apply_chat_template's keyword arguments (enable_thinking, date_string, ...). */
  templateKwargs: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  /** Strings that end an answer; the template's turn markers (and the model's EOS tokens with chat_template) when absent. */
  stop: Schema.optionalKey(Schema.Array(Schema.String)),
  /** Extracts the answer from output and reference for the `regex` score (group 1, else the match). */
  regex: Schema.optionalKey(
    Schema.Union([Schema.String, Regex]).check(Schema.makeFilter((r) => regexProblem(r))),
  ),
  /** Custom scores by name (letters, digits, _ . -; not a built-in score's name). */
  scorers: Schema.Record(Schema.String, Scorer)
    .check(
      Schema.makeFilter((scorers) => {
        for (const name of Object.keys(scorers)) {
          const problem = scorerNameProblem(name)
          if (problem !== undefined) return { path: [name], issue: problem }
        }
        return undefined
      }),
    )
    .pipe(withDefault({})),
  /** How the base was held while the adapter trained: "auto" reads the adapter's training.json. */
  adapterBase: Schema.Literals(["auto", "nf4", "none"]).pipe(withDefault("auto")),
  /** auto (torch-cuda, torch-cpu, then tfjs-node-gpu, tfjs-node, wasm, cpu), torch (CUDA, else CPU), or one backend. */
  backend: Backend,
})
export type EvalParams = typeof EvalParams.Type

export const evalInputs = {
  base: Model,
  /** LoRA or QLoRA adapter for the base (or wire `model`). */
  adapter: optional(Adapter),
  /** A fully fine-tuned model (or wire `adapter`). */
  model: optional(Model),
  tokenizer: Tokenizer,
  /** The test split, tokenized. */
  test: Tokens,
  /** The test split's records, for generation; without them only loss and perplexity are scored. */
  prompts: optional(Records),
}
export const evalOutputs = { report: Report }

export const evaluate = definePlugin({
  name: "eval",
  version: 1,
  params: EvalParams,
  inputs: evalInputs,
  outputs: evalOutputs,
  resources: { gpu: true, cpu: 1, memoryMb: 1024 },
  environment: backendEnvironment,
  code: ["plugins/eval"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.run(ctx),
    ),
})
