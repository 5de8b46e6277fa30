/**
 * The eval step's body: load the base and the tuned model, score both on the
 * test tokens, answer the test prompts greedily with both, score the
 * answers, and write the report.
 */
import { Effect } from "effect"
import { type Failure, fromPromise, type OutputMeta, type StepContext, StepError } from "../../core/Plugin.ts"
import { adapterBaseQuantization, type BaseQuantization, mergedModel } from "../export/Merge.ts"
import {
  makeRenderer,
  TEMPLATES as TEMPLATE_NAMES,
  TemplateError,
  type TemplateName,
} from "../tokenize/Template.ts"
import { loadTokenizer } from "../tokenize/Tokenizer.ts"
import { readTokens } from "../tokenize/TokensFile.ts"
import { initBackend } from "../train/Backend.ts"
import { LlamaModel } from "../train/Llama.ts"
import { readAdapter } from "../train/Lora.ts"
import { type HostModel, loadModel } from "../train/ModelIO.ts"
import { greedy } from "./Greedy.ts"
import type { EvalParams, evalInputs, evalOutputs } from "./index.ts"
import { lossScores, testLoss } from "./Loss.ts"
import { continuation, cutAtStops, defaultStops, preparePrompts } from "./Prompts.ts"
import { type EvalReport, type Sample, type Scores, writeReport } from "./Report.ts"
import { makeScorers, meanScores, ScorerError, scoreOne } from "./Scorers.ts"

type Context = StepContext<EvalParams, typeof evalInputs, typeof evalOutputs>

const fail = (message: string, field?: string): never => {
  throw new StepError({ message, ...(field === undefined ? {} : { field }) })
}

/** The tuned model's weights and how they were made. */
const tunedModel = (
  ctx: Context,
  base: HostModel,
): { host: HostModel; description: string; quantization: BaseQuantization | null } => {
  const { adapter, model } = ctx.inputs
  if (adapter !== undefined && model !== undefined)
    fail("wire either `adapter` (LoRA, QLoRA) or `model` (full fine-tuning), not both", "adapter")
  if (adapter !== undefined) {
    const recorded = adapterBaseQuantization(adapter.path)
    const quantization = ctx.params.adapterBase === "auto" ? (recorded ?? "none") : ctx.params.adapterBase
    const lora = readAdapter(adapter.path)
    return {
      host: mergedModel(base, lora, quantization),
      description: `base + adapter ${adapter.digest.slice(0, 12)} (r=${lora.spec.r} on ${lora.spec.targets.join(", ")}${quantization === "nf4" ? ", merged into the NF4-dequantised base" : ""})`,
      quantization,
    }
  }
  if (model !== undefined) {
    const host = loadModel(model.path)
    if (host.config.vocabSize !== base.config.vocabSize)
      fail(
        `the tuned model's vocabulary (${host.config.vocabSize}) differs from the base's (${base.config.vocabSize}); they cannot share a tokenizer`,
        "model",
      )
    return { host, description: `fine-tuned model ${model.digest.slice(0, 12)}`, quantization: null }
  }
  return fail(
    "wire `adapter` (LoRA, QLoRA) or `model` (full fine-tuning) to compare with the base",
    "adapter",
  )
}

const TEMPLATES: ReadonlyArray<string> = TEMPLATE_NAMES

/** The template prompts are rendered with: the param, else the test tokens' own (what the tokenize step used). */
const promptTemplate = (ctx: Context, format: string | undefined): TemplateName => {
  const given = ctx.params.template
  if (given !== undefined) {
    if (format !== undefined && format !== given)
      ctx.log(`the test tokens were made with template "${format}", the prompts are rendered with "${given}"`)
    return given
  }
  if (format !== undefined && TEMPLATES.includes(format)) return format as TemplateName
  return fail(
    `the test tokens do not say which template made them${format === undefined ? "" : ` ("${format}" is not one eval knows)`}: set \`template\``,
    "template",
  )
}

const evaluateAll = async (ctx: Context): Promise<EvalReport> => {
  const p = ctx.params
  const backend = await initBackend(p.backend === "auto" ? undefined : p.backend)
  ctx.annotate({ backend })
  let scorers: ReturnType<typeof makeScorers>
  try {
    scorers = makeScorers(p.regex, p.scorers)
  } catch (e) {
    return fail((e as Error).message, e instanceof ScorerError ? e.field : "scorers")
  }
  const baseHost = loadModel(ctx.inputs.base.path)
  const tuned = tunedModel(ctx, baseHost)
  const vocab = baseHost.config.vocabSize
  const data = readTokens(ctx.inputs.test.path)
  let maxId = 0
  for (const t of data.tokens) if (t > maxId) maxId = t
  if (data.meta.count > 0 && maxId >= vocab)
    fail(
      `the test tokens hold id ${maxId}, outside the model's vocabulary of ${vocab}: was it tokenized with another tokenizer?`,
      "test",
    )

  const tok = await loadTokenizer(ctx.inputs.tokenizer.path)
  // How prompts are rendered, settled before any model work.
  const template = promptTemplate(ctx, data.meta.format)
  const renderer = await makeRenderer(template, {
    chatTemplate: tok.chatTemplate,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
  }).catch((e: unknown) => fail(e instanceof TemplateError ? e.message : String(e), "template"))
  const addBos =
    p.addBos !== "auto"
      ? p.addBos
      : data.meta.bosId !== undefined
        ? data.meta.bosId !== null
        : tok.addsBos && template !== "chat_template"
  if (addBos && tok.bosId === undefined) fail(`addBos is set but ${tok.file} has no BOS token`, "addBos")
  const models = {
    base: new LlamaModel(baseHost.config, baseHost.weights, { mode: "frozen" }),
    tuned: new LlamaModel(tuned.host.config, tuned.host.weights, { mode: "frozen" }),
  }
  try {
    // Loss on the test tokens.
    const loss = {
      base: testLoss(models.base, data, lossOptions(ctx, "base")),
      tuned: testLoss(models.tuned, data, lossOptions(ctx, "tuned")),
    }

    // Answers to the test prompts.
    const records = ctx.inputs.prompts
    const set =
      records === undefined || p.maxExamples === 0
        ? { prompts: [], records: 0, noReply: 0 }
        : await preparePrompts(
            records.path,
            renderer,
            tok,
            addBos ? tok.bosId : undefined,
            p.maxExamples,
          ).catch((e: unknown) =>
            fail(`${records.path}: ${e instanceof Error ? e.message : String(e)}`, "prompts"),
          )
    const stops = p.stop ?? defaultStops(template)
    const stopIds = [...new Set([tok.eosId, baseHost.config.eosId, baseHost.config.bosId])]
    const fits = set.prompts.filter((x) => x.ids.length < baseHost.config.maxSeqLen)
    const samples: Sample[] = []
    for (const [i, prompt] of fits.entries()) {
      if (ctx.signal.aborted) fail("eval was interrupted")
      const bad = prompt.ids.find((id) => id >= vocab)
      if (bad !== undefined)
        fail(
          `record ${prompt.index}: the tokenizer gives id ${bad}, outside the model's vocabulary of ${vocab}`,
          "tokenizer",
        )
      const textOf = async (ids: ReadonlyArray<number>) =>
        cutAtStops(await continuation(tok, prompt.ids, ids), stops)
      const answer = async (model: LlamaModel) => {
        const ids = await greedy(model, prompt.ids, {
          maxTokens: p.maxNewTokens,
          stopIds,
          signal: ctx.signal,
          ...(stops.length > 0
            ? { done: async (ids: ReadonlyArray<number>) => (await textOf(ids)).stopped }
            : {}),
        })
        return (await textOf(ids)).text
      }
      const base = await answer(models.base)
      const tunedText = await answer(models.tuned)
      let scores: Sample["scores"]
      try {
        scores = {
          tuned: scoreOne(scorers, tunedText, prompt.reference, prompt.record),
          base: scoreOne(scorers, base, prompt.reference, prompt.record),
        }
      } catch (e) {
        return fail(`record ${prompt.index}: ${(e as Error).message}`, "scorers")
      }
      samples.push({
        index: prompt.index,
        record: prompt.record,
        prompt: prompt.text,
        reference: prompt.reference,
        tuned: tunedText,
        base,
        scores,
      })
      ctx.progress(i + 1, fits.length, "prompts answered")
    }
    const scoresOf = (which: "base" | "tuned"): Scores => ({
      ...lossScores(loss[which]),
      ...meanScores(
        scorers,
        samples.map((s) => s.scores[which]),
      ),
    })
    const inputs: Record<string, string> = {}
    for (const [name, a] of Object.entries(ctx.inputs)) if (a !== undefined) inputs[name] = a.digest
    return {
      scores: { tuned: scoresOf("tuned"), base: scoresOf("base") },
      counts: {
        testSequences: loss.tuned.sequences,
        lossTokens: loss.tuned.tokens,
        truncatedSequences: loss.tuned.truncated,
        records: set.records,
        examples: samples.length,
        skippedNoReply: set.noReply,
        skippedPromptTooLong: set.prompts.length - fits.length,
      },
      settings: {
        tuned: tuned.description,
        adapterBase: tuned.quantization,
        template,
        addBos,
        maxExamples: p.maxExamples,
        maxNewTokens: p.maxNewTokens,
        maxLossSequences: p.maxLossSequences,
        decoding: "greedy",
        stop: stops,
        regex: p.regex === undefined ? null : String(p.regex),
        scorers: scorers.map((s) => s.name),
        backend,
      },
      inputs,
      samples,
    }
  } finally {
    models.base.dispose()
    models.tuned.dispose()
  }
}

const lossOptions = (ctx: Context, which: string) => ({
  limit: ctx.params.maxLossSequences,
  signal: ctx.signal,
  onSequence: (done: number, total: number) => ctx.progress(done, total, `test loss (${which})`),
})

export const run = (ctx: Context): Effect.Effect<OutputMeta<typeof evalOutputs>, Failure> =>
  Effect.map(
    fromPromise(async () => {
      const report = await evaluateAll(ctx)
      writeReport(ctx.output("report"), report)
      return report
    }),
    (report) => {
      const { tuned, base } = report.scores
      if (typeof tuned.loss === "number") ctx.metric("test_loss", tuned.loss)
      if (typeof tuned.perplexity === "number") ctx.metric("test_perplexity", tuned.perplexity)
      for (const [which, scores] of [
        ["tuned", tuned],
        ["base", base],
      ] as const)
        for (const [name, v] of Object.entries(scores))
          if (typeof v === "number") ctx.metric(`${which}/${name}`, v)
      const line = (s: Scores) =>
        Object.entries(s)
          .map(([k, v]) => `${k} ${typeof v === "number" ? v.toFixed(4) : "n/a"}`)
          .join(", ")
      ctx.log(`base:  ${line(base)}`)
      ctx.log(`tuned: ${line(tuned)}`)
      return { report: { scores: report.scores, counts: report.counts } }
    },
  )
