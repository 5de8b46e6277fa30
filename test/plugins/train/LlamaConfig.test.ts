import { describe, expect, test } from "vitest"
import { ConfigError, configFromHf } from "../../../plugins/train/LlamaConfig.ts"

const base = {
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 100,
}

describe("configFromHf", () => {
  test("reads RoPE's base from rope_parameters, as transformers 5 saves it", () => {
    expect(
      configFromHf({ ...base, rope_parameters: { rope_type: "default", rope_theta: 500000 } }).ropeTheta,
    ).toBe(500000)
    expect(configFromHf({ ...base, rope_theta: 250000 }).ropeTheta).toBe(250000)
    expect(configFromHf(base).ropeTheta).toBe(10000)
  })

  test("refuses a RoPE scaling the tfjs decoder does not implement, naming the torch backend", () => {
    const llama3 = { ...base, rope_parameters: { rope_type: "llama3", rope_theta: 500000, factor: 32 } }
    expect(() => configFromHf(llama3, "m/config.json")).toThrow(ConfigError)
    expect(() => configFromHf(llama3, "m/config.json")).toThrow(
      /m\/config.json: rope_parameters.rope_type "llama3".*torch backend/,
    )
  })
})
