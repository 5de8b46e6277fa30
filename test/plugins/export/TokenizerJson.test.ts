/**
 * tok512.bin converted to tokenizer.json: Hugging Face's own tokenizer (the
 * `tokenizers` package, the Rust code Python's transformers runs) must give
 * the ids llama2.c's encoder gives, and decode them to the same text.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Tokenizer } from "tokenizers"
import { describe, expect, test } from "vitest"
import { hfTokenizerFiles } from "../../../plugins/export/TokenizerJson.ts"
import { Llama2cTokenizer } from "../../../plugins/tokenize/Tok512.ts"
import { haveShared } from "../../support/data.ts"
import { repoRoot, tok512 } from "./Step.ts"

const gsm8k = path.resolve(repoRoot, "../shared/data/datasets/gsm8k/test.jsonl")
const l2c = Llama2cTokenizer.fromFile(tok512)
const files = hfTokenizerFiles(l2c, 512)
const hf = Tokenizer.fromString(JSON.stringify(files["tokenizer.json"]))
const story = fs.readFileSync(path.join(repoRoot, "test/fixtures/stories260K/greedy-200.txt"), "utf8")

const compare = async (texts: ReadonlyArray<string>) => {
  for (const text of texts) {
    const want = l2c.encode(text, { bos: true })
    const got = (await hf.encode(text)).getIds()
    expect(got, JSON.stringify(text)).toEqual(want)
    expect(await hf.decode(got, true), JSON.stringify(text)).toBe(l2c.decode(want))
  }
}

describe("tok512.bin as tokenizer.json", () => {
  test("the vocabulary and special tokens are llama2.c's", () => {
    const vocab = (files["tokenizer.json"].model as { vocab: Record<string, number> }).vocab
    expect(Object.keys(vocab)).toHaveLength(512)
    expect(vocab["<unk>"]).toBe(0)
    expect(vocab["<s>"]).toBe(1)
    expect(vocab["</s>"]).toBe(2)
    expect(vocab["<0x0A>"]).toBe(13)
    expect(vocab["\u2581"]).toBe(l2c.lookup(" "))
    expect(files["tokenizer_config.json"]).toMatchObject({
      bos_token: "<s>",
      eos_token: "</s>",
      add_bos_token: true,
    })
  })

  test("encodes and decodes the story, odd spacing, and text outside the vocabulary as llama2.c does", async () => {
    await compare([
      story,
      "",
      "x",
      "Hello  world",
      " leading space",
      "tabs\tand\nnew\n\nlines",
      "héllo ☃ 日本語 🙂",
    ])
  })

  test.skipIf(!haveShared("TokenizerJson on GSM8K", gsm8k))(
    "encodes 400 GSM8K questions and answers as llama2.c does",
    async () => {
      // GSM8K is the shared test data set (absent outside the development machines).
      const lines = fs.readFileSync(gsm8k, "utf8").split("\n").filter(Boolean).slice(0, 200)
      await compare(lines.flatMap((l) => Object.values(JSON.parse(l) as Record<string, string>)))
    },
  )
})
