/**
 * The eval step's body: load the base and the tuned model, score both on the
 * test tokens, answer the test prompts greedily with both, score the
 * answers, and write the report. The models live on tfjs (host weights, the
 * adapter merged here) or in the torch worker (Torch.ts); everything else,
 * from tokenizing to the report, is the same code on both.
 */
import * as path from "node:path"
import { Effect } from "effect"
import { type Failure, fromPromise, type OutputMeta, type StepContext, StepError } from "../../core/Plugin.ts"
import { adapterBaseQuantization, type BaseQuantization, mergedModel } from "../export/Merge.ts"
import {
  makeRenderer,
  TEMPLATES as TEMPLATE_NAMES,
  TemplateError,
  type TemplateName,
  tokenizerTemplateOptions,
} from "../tokenize/Template.ts"
import { loadTokenizer } from "../tokenize/Tokenizer.ts"
import { readTokens, type TokensData } from "../tokenize/TokensFile.ts"
import { initBackend } from "../train/Backend.ts"
import { type ResolvedBackend, resolveBackend } from "../train/BackendChoice.ts"
import { LlamaModel } from "../train/Llama.ts"
import { eosIds, type LlamaConfig } from "../train/LlamaConfig.ts"
import { checkAdapterShapes, type HostAdapter, readAdapter } from "../train/Lora.ts"
import { type HostModel, loadModel, loadModelInfo } from "../train/ModelIO.ts"
import type { TorchSession } from "../train/torch/Session.ts"
import { type GreedyOptions, greedy } from "./Greedy.ts"
import type { EvalParams, evalInputs, evalOutputs } from "./index.ts"
import { type LossOptions, type LossResult, lossScores, testLoss } from "./Loss.ts"
import { continuation, cutAtStops, defaultStops, preparePrompts } from "./Prompts.ts"
import { type EvalReport, type Sample, type Scores, writeReport } from "./Report.ts"
import { makeScorers, meanScores, ScorerError, scoreOne } from "./Scorers.ts"

type Context = StepContext<EvalParams, typeof evalInputs, typeof evalOutputs>

const fail = (message: string, field?: string): never => {
  throw new StepError({ message, ...(field === undefined ? {} : { field }) })
}

/** What the tuned model is: the base with an adapter (and how the base was held), or a full model. */
type TunedSource =
  | {
      readonly kind: "adapter"
      readonly lora: HostAdapter
      readonly quantization: BaseQuantization
      readonly description: string
    }
  | { readonly kind: "model"; readonly path: string; readonly description: string }

const tunedSource = (ctx: Context): TunedSource => {
  const { adapter, model } = ctx.inputs
  if (adapter !== undefined && model !== undefined)
    fail("wire either `adapter` (LoRA, QLoRA) or `model` (full fine-tuning), not both", "adapter")
  if (adapter !== undefined) {
    const recorded = adapterBaseQuantization(adapter.path)
    const quantization = ctx.params.adapterBase === "auto" ? (recorded ?? "none") : ctx.params.adapterBase
    const lora = readAdapter(adapter.path)
    return {
      kind: "adapter",
      lora,
      quantization,
      description: `base + adapter ${adapter.digest.slice(0, 12)} (r=${lora.spec.r} on ${lora.spec.targets.join(", ")}${quantization === "nf4" ? ", merged into the NF4-dequantised base" : ""})`,
    }
  }
  if (model !== undefined)
    return { kind: "model", path: model.path, description: `fine-tuned model ${model.digest.slice(0, 12)}` }
  return fail(
    "wire `adapter` (LoRA, QLoRA) or `model` (full fine-tuning) to compare with the base",
    "adapter",
  )
}

const checkVocab = (tuned: LlamaConfig, base: LlamaConfig): void => {
  if (tuned.vocabSize !== base.vocabSize)
    fail(
      `the tuned model's vocabulary (${tuned.vocabSize}) differs from the base's (${base.vocabSize}); they cannot share a tokenizer`,
      "model",
    )
}

type Which = "base" | "tuned"

/** The two models, on whichever backend: scored on the test tokens and asked for greedy answers. */
interface Models {
  readonly source: TunedSource
  readonly config: Record<Which, LlamaConfig>
  loss(which: Which, data: TokensData, o: LossOptions): Promise<LossResult>
  greedy(which: Which, promptIds: ReadonlyArray<number>, o: GreedyOptions): Promise<number[]>
  dispose(): Promise<void>
}

/** On tfjs: host weights, the adapter merged here (QLoRA into the NF4-dequantised base). */
const tfjsModels = (ctx: Context): Models => {
  const baseHost = loadModel(ctx.inputs.base.path)
  const source = tunedSource(ctx)
  let host: HostModel
  if (source.kind === "adapter") host = mergedModel(baseHost, source.lora, source.quantization)
  else {
    host = loadModel(source.path)
    checkVocab(host.config, baseHost.config)
  }
  let models: Record<Which, LlamaModel> | undefined
  const model = (which: Which): LlamaModel => {
    models ??= {
      base: new LlamaModel(baseHost.config, baseHost.weights, { mode: "frozen" }),
      tuned: new LlamaModel(host.config, host.weights, { mode: "frozen" }),
    }
    return models[which]
  }
  return {
    source,
    config: { base: baseHost.config, tuned: host.config },
    loss: async (which, data, o) => testLoss(model(which), data, o),
    greedy: (which, ids, o) => greedy(model(which), ids, o),
    dispose: async () => {
      models?.base.dispose()
      models?.tuned.dispose()
    },
  }
}

/**
 * On torch: the worker loads both models (a llama2.c checkpoint converted
 * in scratch first) and merges the adapter with peft, into the NF4
 * round-tripped base for QLoRA.
 */
const torchModels = async (
  ctx: Context,
  backend: ResolvedBackend,
  session: TorchSession,
  testDir: string,
): Promise<Models> => {
  const [{ hfBaseDir }, { torchGreedy, torchTestLoss }] = await Promise.all([
    import("../train/Step.ts"),
    import("./Torch.ts"),
  ])
  const baseDir = await hfBaseDir(ctx.inputs.base.path, ctx.scratch)
  const baseInfo = loadModelInfo(baseDir)
  const baseConfig = baseInfo.config
  const source = tunedSource(ctx)
  const device = backend.name === "torch-cuda" ? "cuda" : "cpu"
  const threads = Math.max(1, ctx.threads)
  let tunedConfig = baseConfig
  let tunedLoad: Parameters<TorchSession["load"]>[1]
  if (source.kind === "adapter") {
    // For an architecture beyond the tfjs decoder's, peft checks the adapter as it loads it.
    if (baseInfo.exact) checkAdapterShapes(baseConfig, source.lora)
    tunedLoad = {
      path: baseDir,
      adapter: (ctx.inputs.adapter as { path: string }).path,
      nf4: source.quantization === "nf4",
      device,
      threads,
    }
  } else {
    const dir = await hfBaseDir(source.path, path.join(ctx.scratch, "tuned"))
    tunedConfig = loadModelInfo(dir).config
    checkVocab(tunedConfig, baseConfig)
    tunedLoad = { path: dir, device, threads }
  }
  const config = { base: baseConfig, tuned: tunedConfig }
  let loaded: Promise<unknown> | undefined
  const ready = (): Promise<unknown> => {
    loaded ??= Promise.all([
      session.load("base", { path: baseDir, device, threads }),
      session.load("tuned", tunedLoad),
    ])
    return loaded
  }
  // Loading starts now, while the test tokens and the prompts are read; a failure surfaces at first use.
  ready().catch(() => {})
  return {
    source,
    config,
    loss: async (which, data, o) => {
      await ready()
      return torchTestLoss(session, which, testDir, data.meta.count, config[which].maxSeqLen, o)
    },
    greedy: async (which, ids, o) => {
      await ready()
      return torchGreedy(session, which, config[which].maxSeqLen, ids, o)
    },
    dispose: () => session.close(),
  }
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

const evaluateAll = async (ctx: Context, signal: AbortSignal): Promise<EvalReport> => {
  const p = ctx.params
  // The backend the step key was built with (the plugin's environment hook).
  const resolved = resolveBackend(p.backend)
  const onTorch = resolved.family === "torch"
  const backend = onTorch ? resolved.name : await initBackend(resolved.name)
  ctx.annotate(onTorch ? { ...resolved.environment, backend } : { backend })
  let scorers: ReturnType<typeof makeScorers>
  try {
    scorers = makeScorers(p.regex, p.scorers)
  } catch (e) {
    return fail((e as Error).message, e instanceof ScorerError ? e.field : "scorers")
  }
  // The torch worker starts (and imports its libraries) while the rest is read here.
  const session = onTorch
    ? new (await import("../train/torch/Session.ts")).TorchSession({
        signal: AbortSignal.any([ctx.signal, signal]),
      })
    : undefined
  let models: Models
  try {
    models =
      session === undefined
        ? tfjsModels(ctx)
        : await torchModels(ctx, resolved, session, ctx.inputs.test.path)
  } catch (e) {
    await session?.close()
    throw e
  }
  try {
    return await scoreAll(ctx, models, backend, scorers)
  } finally {
    await models.dispose()
  }
}

const scoreAll = async (
  ctx: Context,
  models: Models,
  backend: string,
  scorers: ReturnType<typeof makeScorers>,
): Promise<EvalReport> => {
  const p = ctx.params
  const tuned = models.source
  const baseConfig = models.config.base
  const vocab = baseConfig.vocabSize
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
  const renderer = await makeRenderer(template, tokenizerTemplateOptions(tok, p.templateKwargs)).catch(
    (e: unknown) => fail(e instanceof TemplateError ? e.message : String(e), "template"),
  )
  const addBos =
    p.addBos !== "auto"
      ? p.addBos
      : data.meta.bosId !== undefined
        ? data.meta.bosId !== null
        : tok.addsBos && template !== "chat_template"
  if (addBos && tok.bosId === undefined) fail(`addBos is set but ${tok.file} has no BOS token`, "addBos")
  {
    // Loss on the test tokens.
    const loss = {
      base: await models.loss("base", data, lossOptions(ctx, "base")),
      tuned: await models.loss("tuned", data, lossOptions(ctx, "tuned")),
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
    const stops = p.stop ?? defaultStops(template, tok)
    // Every EOS id of the tokenizer, generation_config.json and config.json (Llama 3 ends a turn with <|eot_id|>, not <|end_of_text|>).
    const stopIds = [...new Set([...tok.eosIds, ...eosIds(baseConfig), baseConfig.bosId])]
    const fits = set.prompts.filter((x) => x.ids.length < baseConfig.maxSeqLen)
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
      const answer = async (which: Which) => {
        const ids = await models.greedy(which, prompt.ids, {
          maxTokens: p.maxNewTokens,
          stopIds,
          signal: ctx.signal,
          ...(stops.length > 0
            ? { done: async (ids: ReadonlyArray<number>) => (await textOf(ids)).stopped }
            : {}),
        })
        return (await textOf(ids)).text
      }
      const base = await answer("base")
      const tunedText = await answer("tuned")
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
        adapterBase: tuned.kind === "adapter" ? tuned.quantization : null,
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
  }
}

const lossOptions = (ctx: Context, which: string) => ({
  limit: ctx.params.maxLossSequences,
  signal: ctx.signal,
  onSequence: (done: number, total: number) => ctx.progress(done, total, `test loss (${which})`),
})

export const run = (ctx: Context): Effect.Effect<OutputMeta<typeof evalOutputs>, Failure> =>
  Effect.map(
    fromPromise(async (signal) => {
      const report = await evaluateAll(ctx, signal)
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
