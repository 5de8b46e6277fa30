import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { makeRenderer, promptAndReference, TemplateError } from "../../../plugins/tokenize/Template.ts"
import { haveShared } from "../../support/data.ts"
import { gpt2Dir } from "./fixtures.ts"

const instruction = { instruction: "Add the numbers.", input: "2 and 3", output: "5" }
const chat = {
  messages: [
    { role: "system" as const, content: "Be brief." },
    { role: "user" as const, content: "Hi" },
    { role: "assistant" as const, content: "Hello." },
    { role: "user" as const, content: "Sum 2+3" },
    { role: "assistant" as const, content: "5" },
  ],
}

// The ChatML template Qwen and others ship in tokenizer_config.json.
const CHATML_JINJA =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
// Llama 2's template: BOS and EOS written by the template itself.
const LLAMA2_JINJA =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
  "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}" +
  "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"

describe("prompt formats", () => {
  it("alpaca: Stanford Alpaca's prompt, with and without input; the output is the trained part", async () => {
    const r = await makeRenderer("alpaca")
    expect(r.render(instruction)).toEqual([
      {
        text:
          "Below is an instruction that describes a task, paired with an input that provides further context. " +
          "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n",
        train: false,
      },
      { text: "5", train: true },
    ])
    const [prompt] = r.render({ instruction: "Say hi.", output: "hi" })
    expect(prompt!.text).toBe(
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n",
    )
    const turns = r.render(chat)
    expect(turns.map((p) => p.train)).toEqual([false, true, false, true])
    expect(turns[0]!.text.startsWith("Be brief.\n\n### Instruction:\nHi")).toBe(true)
  })

  it("chatml: every reply trains up to and including <|im_end|>", async () => {
    const r = await makeRenderer("chatml")
    expect(r.render(chat)).toEqual([
      {
        text: "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        train: false,
      },
      { text: "Hello.<|im_end|>", train: true },
      { text: "\n<|im_start|>user\nSum 2+3<|im_end|>\n<|im_start|>assistant\n", train: false },
      { text: "5<|im_end|>", train: true },
    ])
    expect(
      r
        .render({ prompt: "2+3=", completion: "5" })
        .map((p) => p.text)
        .join(""),
    ).toBe("<|im_start|>user\n2+3=<|im_end|>\n<|im_start|>assistant\n5<|im_end|>")
  })

  it("none: the text as it is", async () => {
    const r = await makeRenderer("none")
    expect(r.render({ prompt: "2+3=", completion: "5" })).toEqual([
      { text: "2+3=", train: false },
      { text: "5", train: true },
    ])
    expect(r.render({ instruction: "Q", output: "A" })).toEqual([
      { text: "Q\n\n", train: false },
      { text: "A", train: true },
    ])
  })

  it("chat_template: the Jinja template renders the same text as chatml, split at each reply", async () => {
    const jinja = await makeRenderer("chat_template", { chatTemplate: CHATML_JINJA })
    const chatml = await makeRenderer("chatml")
    const parts = jinja.render(chat)
    expect(parts.map((p) => p.text).join("")).toBe(
      chatml
        .render(chat)
        .map((p) => p.text)
        .join("") + "\n",
    )
    expect(parts.filter((p) => p.train).map((p) => p.text)).toEqual(["Hello.<|im_end|>\n", "5<|im_end|>\n"])
  })

  it("chat_template: a template that writes BOS and EOS itself (Llama 2)", async () => {
    const r = await makeRenderer("chat_template", {
      chatTemplate: LLAMA2_JINJA,
      bosToken: "<s>",
      eosToken: "</s>",
    })
    expect(r.render(chat)).toEqual([
      { text: "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]", train: false },
      { text: " Hello. </s>", train: true },
      { text: "<s>[INST] Sum 2+3 [/INST]", train: false },
      { text: " 5 </s>", train: true },
    ])
    expect(() => r.render({ messages: [{ role: "assistant", content: "x" }] })).toThrow(
      /chat template failed: Conversation roles must alternate/,
    )
  })

  it("chat_template: fails clearly without a template or with one that does not parse", async () => {
    await expect(makeRenderer("chat_template", {})).rejects.toThrow(TemplateError)
    await expect(makeRenderer("chat_template", { chatTemplate: "{% for %}" })).rejects.toThrow(
      /does not parse/,
    )
  })

  it("splits a record into the prompt a model is asked and the reply expected", async () => {
    const r = await makeRenderer("chatml")
    const { prompt, reference } = promptAndReference(r.render(chat))
    expect(prompt.endsWith("Sum 2+3<|im_end|>\n<|im_start|>assistant\n")).toBe(true)
    expect(prompt.includes("Hello.<|im_end|>")).toBe(true)
    expect(reference).toBe("5<|im_end|>")
  })

  it.skipIf(!haveShared("the GPT-2 template test", gpt2Dir))(
    "GPT-2 has no chat template: the error says what to do",
    async () => {
      expect(fs.readFileSync(path.join(gpt2Dir, "tokenizer_config.json"), "utf8")).not.toMatch(
        /chat_template/,
      )
      await expect(makeRenderer("chat_template", {})).rejects.toThrow(/use "alpaca" or "chatml"/)
    },
  )
})
