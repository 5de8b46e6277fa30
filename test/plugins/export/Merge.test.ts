import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { adapterBaseQuantization } from "../../../plugins/export/Merge.ts"
import { tempDir } from "./Step.ts"

const withFiles = (files: Record<string, unknown>) => {
  const dir = tempDir("quant")
  for (const [name, value] of Object.entries(files))
    fs.writeFileSync(path.join(dir, name), typeof value === "string" ? value : JSON.stringify(value))
  return dir
}

describe("how an adapter's base was held", () => {
  test("read from training.json as the trainers write it, or from other common records", () => {
    expect(adapterBaseQuantization(withFiles({ "training.json": { kind: "qlora", steps: 10 } }))).toBe("nf4")
    expect(adapterBaseQuantization(withFiles({ "training.json": { kind: "lora", steps: 10 } }))).toBe("none")
    expect(adapterBaseQuantization(withFiles({ "training.json": { plugin: "train-qlora" } }))).toBe("nf4")
    expect(adapterBaseQuantization(withFiles({ "training.json": { base: { quantization: "nf4" } } }))).toBe(
      "nf4",
    )
    expect(
      adapterBaseQuantization(
        withFiles({
          "adapter_config.json": { peft_type: "LORA", quantization_config: { bnb_4bit_quant_type: "nf4" } },
        }),
      ),
    ).toBe("nf4")
  })

  test("unknown when nothing says, or the record is not JSON", () => {
    expect(
      adapterBaseQuantization(withFiles({ "adapter_config.json": { peft_type: "LORA", r: 8 } })),
    ).toBeUndefined()
    expect(adapterBaseQuantization(withFiles({ "training.json": "not json" }))).toBeUndefined()
    expect(adapterBaseQuantization(withFiles({}))).toBeUndefined()
  })
})
