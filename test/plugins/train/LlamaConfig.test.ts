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

  test("reads llama3 RoPE scaling from either form, and refuses another scaling, naming the torch backend", () => {
    const rope = {
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    }
    const want = {
      type: "llama3",
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositions: 8192,
    }
    const v5 = configFromHf({
      ...base,
      rope_parameters: { rope_type: "llama3", rope_theta: 500000, ...rope },
    })
    expect([v5.ropeTheta, v5.ropeScaling]).toEqual([500000, want])
    const v4 = configFromHf({ ...base, rope_theta: 500000, rope_scaling: { rope_type: "llama3", ...rope } })
    expect([v4.ropeTheta, v4.ropeScaling]).toEqual([500000, want])
    const yarn = { ...base, rope_parameters: { rope_type: "yarn", rope_theta: 500000, factor: 32 } }
    expect(() => configFromHf(yarn, "m/config.json")).toThrow(ConfigError)
    expect(() => configFromHf(yarn, "m/config.json")).toThrow(
      /m\/config.json: rope_parameters.rope_type "yarn".*torch backend/,
    )
  })
})
