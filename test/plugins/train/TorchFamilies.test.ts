/**
 * The torch backend trains what transformers loads, not only what the tfjs
 * decoder runs: tiny random Qwen2 (attention biases, tied embeddings, a list
 * of EOS ids) and Llama 3 (llama3 RoPE scaling) models made by transformers
 * itself train with LoRA and in full, and their outputs load back in
 * transformers and peft. The tfjs decoder refuses them before training,
 * naming the field and the torch backend.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { loadModel, loadModelInfo } from "../../../plugins/train/ModelIO.ts"
import { trainFull } from "../../../plugins/train-full/index.ts"
import { trainLora } from "../../../plugins/train-lora/index.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { artifact, runPlugin, series } from "./Context.ts"
import { randomIds } from "./Tiny.ts"
import { writeTokens } from "./TokensFixture.ts"

const make = path.join(import.meta.dirname, "python/make_model.py")

const reload = `
import json, sys, torch
from transformers import AutoModelForCausalLM
req = json.load(sys.stdin)
ids = torch.tensor([req["ids"]])
with torch.no_grad():
    base = AutoModelForCausalLM.from_pretrained(req["base"], local_files_only=True)
    plain = base(input_ids=ids).logits
    if "adapter" in req:
        from peft import PeftModel
        tuned = PeftModel.from_pretrained(base, req["adapter"], local_files_only=True)(input_ids=ids).logits
    else:
        tuned = AutoModelForCausalLM.from_pretrained(req["model"], local_files_only=True)(input_ids=ids).logits
print(json.dumps({"type": base.config.model_type, "delta": (tuned - plain).abs().max().item()}))
`

describe.skipIf(!hasTorch)("the torch backend trains other model families", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "families-"))
  const vocab = 96
  const seqs = Array.from({ length: 16 }, (_, i) => Array.from(randomIds(10 + (i % 6), vocab, 40 + i)))
  const train = writeTokens(path.join(root, "train"), seqs)
  const ids = Array.from(randomIds(9, vocab, 7))
  const params = { steps: 3, batchSize: 4, lr: 0.02, evalEvery: 0, backend: "torch-cpu" }

  for (const family of ["qwen2", "llama3"] as const)
    test(`${family}: LoRA and full fine-tuning train, and their outputs load back in transformers and peft`, async () => {
      const base = path.join(root, family)
      runPython([make, family, base])
      const info = loadModelInfo(base)
      expect(info.exact).toBe(false)
      expect(info.config.vocabSize).toBe(vocab)
      expect(() => loadModel(base)).toThrow(
        /config\.json: .*(model_type "qwen2"|rope_type "llama3").*torch backend/,
      )

      const inputs = { train: artifact("Tokens", train), base: artifact("Model", base) }
      const lora = await runPlugin(trainLora, params, inputs)
      expect(series(lora, "train_loss").every(Number.isFinite)).toBe(true)
      const full = await runPlugin(trainFull, params, inputs)
      const a = JSON.parse(
        runPython(["-c", reload], JSON.stringify({ base, adapter: lora.outputs.adapter, ids })),
      )
      const m = JSON.parse(
        runPython(["-c", reload], JSON.stringify({ base, model: full.outputs.model, ids })),
      )
      expect(a.type).toBe(family === "qwen2" ? "qwen2" : "llama")
      // Trained: both change the logits.
      expect(a.delta).toBeGreaterThan(1e-3)
      expect(m.delta).toBeGreaterThan(1e-3)
      const cfg = JSON.parse(fs.readFileSync(path.join(full.outputs.model as string, "config.json"), "utf8"))
      expect(cfg.model_type).toBe(family === "qwen2" ? "qwen2" : "llama")
    }, 300_000)
})
