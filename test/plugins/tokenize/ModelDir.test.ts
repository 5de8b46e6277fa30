/**
 * A model directory as the tokenizer: what it reads beside tokenizer.json
 * (tokenizer_config.json, chat_template.jinja, additional_chat_templates/,
 * generation_config.json), and the errors a broken one gives, naming the
 * file, the line and the field.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { defaultStops } from "../../../plugins/eval/Prompts.ts"
import { makeRenderer, strftime, tokenizerTemplateOptions } from "../../../plugins/tokenize/Template.ts"
import { loadTokenizer } from "../../../plugins/tokenize/Tokenizer.ts"
import { haveShared } from "../../support/data.ts"
import { gpt2Dir, repoRoot, runTokenizeStep, tmpDir, writeRecords } from "./fixtures.ts"

const gpt2Json = path.join(gpt2Dir, "tokenizer.json")
const templates = path.join(repoRoot, "test/fixtures/templates")
const mistralTemplate = fs.readFileSync(path.join(templates, "mistral-7b-instruct-v0.3.jinja"), "utf8")

/** GPT-2's tokenizer.json in a fresh directory with the given files beside it. */
const modelDir = (files: Record<string, string | object>): string => {
  const dir = tmpDir("model-dir")
  fs.copyFileSync(gpt2Json, path.join(dir, "tokenizer.json"))
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(
      path.join(dir, name),
      typeof content === "string" ? content : JSON.stringify(content, null, 2),
    )
  }
  return dir
}

const chat = {
  messages: [
    { role: "user" as const, content: "Hi" },
    { role: "assistant" as const, content: "Hello." },
  ],
}

describe.skipIf(!haveShared("the model directory suite", gpt2Json))(
  "a model directory as the tokenizer",
  () => {
    it("reads AddedToken objects, generation_config.json's EOS list, and stops on every EOS", async () => {
      const dir = modelDir({
        "tokenizer_config.json": {
          bos_token: { content: "<|endoftext|>", lstrip: false, __type: "AddedToken" },
          eos_token: { content: "<|endoftext|>", __type: "AddedToken" },
          add_bos_token: false,
        },
        "generation_config.json": { eos_token_id: [50256, 13] },
      })
      const tok = await loadTokenizer(dir)
      expect(tok.eosToken).toBe("<|endoftext|>")
      expect(tok.eosIds).toEqual([50256, 13])
      expect(tok.eosTokens).toEqual(["<|endoftext|>", "."])
      expect(tok.specialTokens).toEqual({ bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" })
      expect(tok.addsBos).toBe(false)
      expect(defaultStops("chat_template", tok)).toEqual(["<|endoftext|>", "."])
      // special_tokens_map.json fills what tokenizer_config.json leaves out (older repositories keep the tokens there).
      const mapped = await loadTokenizer(
        modelDir({
          "tokenizer_config.json": { add_bos_token: true },
          "special_tokens_map.json": { bos_token: { content: "<|endoftext|>" }, eos_token: "<|endoftext|>" },
        }),
      )
      expect([mapped.bosId, mapped.eosId, mapped.addsBos]).toEqual([50256, 50256, true])
      await expect(
        loadTokenizer(modelDir({ "special_tokens_map.json": { pad_token: "<pad>" } })),
      ).rejects.toThrow(/special_tokens_map\.json: pad_token "<pad>" is not in the vocabulary/)
      // Without generation_config.json, config.json's eos_token_id (a model directory's own).
      const plain = await loadTokenizer(modelDir({ "config.json": { eos_token_id: 50256 } }))
      expect(plain.eosIds).toEqual([50256])
    })

    it("takes chat_template.jinja over tokenizer_config.json's, and the template named default of several", async () => {
      const jinja =
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
      const dir = modelDir({
        "tokenizer_config.json": { eos_token: "<|endoftext|>", chat_template: "{{ 'from the config' }}" },
        "chat_template.jinja": jinja,
        "additional_chat_templates/tool_use.jinja": "{{ 'tools' }}",
      })
      const tok = await loadTokenizer(dir)
      expect(tok.chatTemplate).toBe(jinja)
      expect(tok.chatTemplateFile).toBe(path.join(dir, "chat_template.jinja"))
      const listed = await loadTokenizer(
        modelDir({
          "tokenizer_config.json": {
            chat_template: [
              { name: "tool_use", template: "{{ 'tools' }}" },
              { name: "default", template: jinja },
            ],
          },
        }),
      )
      expect(listed.chatTemplate).toBe(jinja)
      const r = await makeRenderer("chat_template", tokenizerTemplateOptions(listed))
      expect(r.render(chat)).toEqual([
        { text: "user: Hi\nassistant: ", train: false },
        { text: "Hello.\n", train: true },
      ])
      await expect(
        loadTokenizer(
          modelDir({
            "tokenizer_config.json": {
              chat_template: [
                { name: "a", template: "x" },
                { name: "b", template: "y" },
              ],
            },
          }),
        ),
      ).rejects.toThrow(
        /tokenizer_config\.json:2: there are several chat templates \(a, b\) and none is named "default"/,
      )
    })

    it("names the file and line of a tokenizer_config.json that is not JSON, and of a bad field", async () => {
      const broken = modelDir({
        "tokenizer_config.json": '{\n  "eos_token": "<|endoftext|>",\n  "chat_template": 3,,\n}\n',
      })
      await expect(loadTokenizer(broken)).rejects.toMatchObject({
        _tag: "StepError",
        file: path.join(broken, "tokenizer_config.json"),
        line: 3,
        message: expect.stringMatching(/tokenizer_config\.json:3:\d+: invalid JSON/),
      })
      const wrong = modelDir({
        "tokenizer_config.json": '{\n  "eos_token": "<|endoftext|>",\n  "chat_template": 3\n}\n',
      })
      await expect(loadTokenizer(wrong)).rejects.toMatchObject({
        field: "chat_template",
        line: 3,
        message: expect.stringMatching(/tokenizer_config\.json:3: chat_template must be a string or a list/),
      })
      const eos = modelDir({ "tokenizer_config.json": { eos_token: { id: 3 } } })
      await expect(loadTokenizer(eos)).rejects.toThrow(/eos_token must be a string or \{"content": string\}/)
      const gen = modelDir({ "generation_config.json": '{\n  "eos_token_id": [50256, 99999]\n}' })
      await expect(loadTokenizer(gen)).rejects.toMatchObject({
        field: "eos_token_id",
        line: 2,
        message: expect.stringMatching(
          /generation_config\.json:2: eos_token_id must be a token id below the vocabulary size 50257/,
        ),
      })
      const flag = modelDir({ "tokenizer_config.json": { add_bos_token: "yes" } })
      await expect(loadTokenizer(flag)).rejects.toThrow(/add_bos_token must be true or false, got "yes"/)
    })

    it("names the template's file and the Jinja error when a template does not parse or fails", async () => {
      const dir = modelDir({ "chat_template.jinja": "{% for m in messages %}{{ m.content }" })
      const tok = await loadTokenizer(dir)
      await expect(makeRenderer("chat_template", tokenizerTemplateOptions(tok))).rejects.toThrow(
        `${path.join(dir, "chat_template.jinja")}: the chat template does not parse: `,
      )
      // Mistral's template refuses two user turns in a row with raise_exception; the step names the record's line too.
      const mistral = modelDir({
        "tokenizer_config.json": {
          bos_token: "<|endoftext|>",
          eos_token: "<|endoftext|>",
          chat_template: mistralTemplate,
        },
      })
      const records = writeRecords(tmpDir("bad-chat"), [
        chat,
        {
          messages: [
            { role: "user", content: "a" },
            { role: "user", content: "b" },
            { role: "assistant", content: "c" },
          ],
        },
      ])
      await expect(
        runTokenizeStep({ template: "chat_template" }, { records, tokenizer: mistral }),
      ).rejects.toMatchObject({
        _tag: "StepError",
        file: records,
        line: 2,
        message: `${records}:2: ${path.join(mistral, "tokenizer_config.json")}: the chat template failed: After the optional system message, conversation roles must alternate user/assistant/user/assistant/...`,
      })
    })

    it("strftime_now writes dates as Python's strftime does", () => {
      const d = new Date(2024, 6, 5, 9, 3, 7)
      expect(strftime(d, "%d %b %Y")).toBe("05 Jul 2024")
      expect(strftime(d, "%A %B %-d, %H:%M:%S %p %j %y %%")).toBe("Friday July 5, 09:03:07 AM 187 24 %")
    })
  },
)
