/**
 * `tunegraph generate --model <dir | llama2.c file> [--adapter <dir>]
 * [--prompt TEXT] [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
 * [--tokenizer FILE] [--backend NAME]`: prints the prompt and its
 * continuation, as llama2.c's `run` does (with stories260K at temperature 0
 * the output is byte for byte run.c's).
 *
 * `--backend torch` (torch-cpu, torch-cuda) runs the model in the torch
 * backend's worker; tokenizing, sampling and printing stay here, so a seed
 * samples alike on either backend. `auto` resolves as the steps do: torch
 * where it is installed, else the tfjs chain.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import type { SampleLoopOptions } from "./Generate.ts"
import { eosIds } from "./LlamaConfig.ts"
import type { HostModel } from "./ModelIO.ts"

const USAGE =
  "usage: tunegraph generate --model <dir | llama2.c file> [--adapter <dir>] [--prompt TEXT] [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--tokenizer FILE] [--backend auto|torch|torch-cpu|torch-cuda|tfjs-node-gpu|tfjs-node|wasm|cpu]"

class UsageError extends Error {}

const number = (
  value: string | undefined,
  flag: string,
  fallback: number,
  check: (n: number) => boolean,
): number => {
  if (value === undefined) return fallback
  const n = Number(value)
  if (value.trim() === "" || !Number.isFinite(n) || !check(n))
    throw new UsageError(`${flag}: invalid value "${value}"`)
  return n
}

/** Turns ids into the bytes to print, one id at a time. */
interface Printer {
  readonly promptIds: number[]
  /** Bytes for `id` following `prev` (already filtered as run.c's safe_printf). */
  piece(id: number, prev: number): Promise<Uint8Array>
}

const isPrintable = (b: number) =>
  (b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0b || b === 0x0c || b === 0x0d

const llama2cPrinter = async (file: string, prompt: string): Promise<Printer> => {
  const { Llama2cTokenizer } = await import("../tokenize/Tok512.ts")
  const tok = Llama2cTokenizer.fromFile(file)
  return {
    promptIds: tok.encode(prompt, { bos: true }),
    piece: async (id, prev) => {
      const p = tok.piece(id, prev)
      // run.c's safe_printf: a lone byte that is neither printable nor whitespace is dropped.
      return p.length === 1 && !isPrintable(p[0] as number) ? new Uint8Array(0) : p
    },
  }
}

const hfPrinter = async (file: string, prompt: string, bosId: number): Promise<Printer> => {
  const { Tokenizer } = await import("tokenizers")
  const tok = Tokenizer.fromFile(file)
  const enc = await tok.encode(prompt)
  const ids = enc.getIds()
  const seen: number[] = []
  let printed = ""
  return {
    promptIds: ids[0] === bosId ? ids : [bosId, ...ids],
    // Byte-level BPE pieces are not text on their own: decode the whole tail and print what is new.
    piece: async (id) => {
      seen.push(id)
      const text = await tok.decode(seen, true)
      if (text.endsWith("\uFFFD")) return new Uint8Array(0)
      const fresh = text.slice(printed.length)
      printed = text
      return Buffer.from(fresh, "utf8")
    },
  }
}

/**
 * Whether the model runs on torch: a torch name (`torch`, `torch-cpu`,
 * `torch-cuda`), or `auto` where torch is installed (as the steps resolve
 * it); other names go to tfjs.
 */
const isTorchChoice = async (name: string | undefined): Promise<boolean> => {
  const { parseBackendChoice, resolveBackend } = await import("./BackendChoice.ts")
  try {
    const choice = parseBackendChoice(name)
    return choice === "auto" ? resolveBackend("auto").family === "torch" : choice.startsWith("torch")
  } catch {
    return false
  }
}

/**
 * The model on the torch backend's worker (a llama2.c checkpoint converted
 * into a temporary Hugging Face directory first), sampled here.
 */
const generateOnTorch = async (
  backendName: string,
  modelPath: string,
  adapterDir: string | undefined,
  options: SampleLoopOptions,
): Promise<number[]> => {
  const [{ resolveBackend }, { hfBaseDir }, { TorchSession }, { sampleLoop }] = await Promise.all([
    import("./BackendChoice.ts"),
    import("./Step.ts"),
    import("./torch/Session.ts"),
    import("./Generate.ts"),
  ])
  const backend = resolveBackend(backendName)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tunegraph-generate-"))
  const session = new TorchSession()
  try {
    const dir = await hfBaseDir(modelPath, tmp)
    await session.load("model", {
      path: dir,
      ...(adapterDir === undefined ? {} : { adapter: path.resolve(adapterDir) }),
      device: backend.name === "torch-cuda" ? "cuda" : "cpu",
    })
    return await sampleLoop((ids, first) => session.next("model", ids, first), options)
  } finally {
    await session.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

export async function generateCommand(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: argv,
      options: {
        model: { type: "string" },
        adapter: { type: "string" },
        prompt: { type: "string" },
        "max-tokens": { type: "string" },
        temperature: { type: "string" },
        "top-p": { type: "string" },
        seed: { type: "string" },
        tokenizer: { type: "string" },
        backend: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (e) {
    process.stderr.write(`tunegraph generate: ${e instanceof Error ? e.message : String(e)}\n${USAGE}\n`)
    return 2
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  try {
    const modelPath = values.model as string | undefined
    if (modelPath === undefined) throw new UsageError("--model is required")
    const maxTokens = number(
      values["max-tokens"] as string | undefined,
      "--max-tokens",
      200,
      (n) => Number.isInteger(n) && n >= 0,
    )
    const temperature = number(values.temperature as string | undefined, "--temperature", 0, (n) => n >= 0)
    const topP = number(values["top-p"] as string | undefined, "--top-p", 0.9, (n) => n >= 0 && n <= 1)
    const seed = number(values.seed as string | undefined, "--seed", 0, (n) => Number.isInteger(n) && n >= 0)
    const prompt = (values.prompt as string | undefined) ?? ""

    const backendName = (values.backend as string | undefined) ?? process.env.TUNEGRAPH_BACKEND
    const onTorch = await isTorchChoice(backendName)
    const [{ initBackend }, { loadModel, loadModelInfo }, { checkAdapterShapes, readAdapter }] =
      await Promise.all([import("./Backend.ts"), import("./ModelIO.ts"), import("./Lora.ts")])
    if (!onTorch) await initBackend(backendName)
    // On torch the weights are the worker's to load; here only the config and the tokenizer.
    const model = onTorch ? loadModelInfo(modelPath) : loadModel(modelPath)
    const adapter = values.adapter === undefined ? undefined : readAdapter(values.adapter as string)
    if (onTorch && adapter !== undefined && (!("exact" in model) || model.exact))
      checkAdapterShapes(model.config, adapter)
    const tokFile = (values.tokenizer as string | undefined) ?? model.tokenizer?.path
    if (tokFile === undefined)
      throw new Error(
        `${modelPath}: no tokenizer beside the model (tokenizer.json or tok*.bin); pass --tokenizer FILE`,
      )
    if (!fs.existsSync(tokFile)) throw new Error(`${tokFile}: no such tokenizer file`)
    const printer = tokFile.endsWith(".json")
      ? await hfPrinter(tokFile, prompt, model.config.bosId)
      : await llama2cPrinter(tokFile, prompt)
    const ids = printer.promptIds
    const bad = ids.find((id) => id < 0 || id >= model.config.vocabSize)
    if (bad !== undefined)
      throw new Error(
        `the tokenizer gives id ${bad}, outside the model's vocabulary of ${model.config.vocabSize}`,
      )
    let prev = ids[0] as number
    for (const id of ids.slice(1)) {
      process.stdout.write(await printer.piece(id, prev))
      prev = id
    }
    let chain = Promise.resolve()
    const onToken = (id: number) => {
      const before = prev
      prev = id
      chain = chain.then(async () => {
        process.stdout.write(await printer.piece(id, before))
      })
    }
    if (onTorch) {
      await generateOnTorch(backendName ?? "auto", modelPath, values.adapter as string | undefined, {
        promptIds: ids,
        maxTokens,
        maxSeqLen: model.config.maxSeqLen,
        bosId: model.config.bosId,
        eosIds: eosIds(model.config),
        temperature,
        topP,
        seed,
        onToken,
      })
    } else {
      const { generate } = await import("./Generate.ts")
      await generate({
        model: model as HostModel,
        ...(adapter ? { adapter } : {}),
        promptIds: ids,
        maxTokens,
        temperature,
        topP,
        seed,
        onToken,
      })
    }
    await chain
    process.stdout.write("\n")
    return 0
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e)
    process.stderr.write(`tunegraph generate: ${message}\n${e instanceof UsageError ? `${USAGE}\n` : ""}`)
    return e instanceof UsageError ? 2 : 1
  }
}
