/**
 * A model directory as the tokenizer, and its own chat template rendered as
 * transformers renders it. For each family (Llama 3.2, Llama 3.1/3.3, Qwen2.5, Qwen3,
 * Mistral v0.3, SmolLM2) the real template (test/fixtures/templates, with
 * its source) goes into a small model directory that transformers itself
 * saves (GPT-2's byte-level BPE with the family's special tokens), and
 * apply_chat_template is the reference for the text, the ids, the generation
 * prompt and the EOS ids. One Python run renders every case.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { defaultStops, preparePrompts } from "../../../plugins/eval/Prompts.ts"
import type { Message } from "../../../plugins/tokenize/RecordReader.ts"
import type { TokenizeReport } from "../../../plugins/tokenize/Run.ts"
import { makeRenderer, tokenizerTemplateOptions } from "../../../plugins/tokenize/Template.ts"
import { loadTokenizer } from "../../../plugins/tokenize/Tokenizer.ts"
import { readTokens } from "../../../plugins/tokenize/TokensFile.ts"
import { haveShared } from "../../support/data.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { gpt2Dir, repoRoot, runTokenizeStep, tmpDir, writeRecords } from "./fixtures.ts"

const script = path.join(import.meta.dirname, "python/chat_templates.py")
const templates = path.join(repoRoot, "test/fixtures/templates")
const gpt2Json = path.join(gpt2Dir, "tokenizer.json")
const ready = hasTorch && haveShared("the chat template suite", gpt2Json)

const FAMILIES = ["llama3", "llama3.3", "qwen2.5", "qwen3", "mistral", "smollm2"] as const
type Family = (typeof FAMILIES)[number]

interface Case {
  readonly name: string
  readonly families?: ReadonlyArray<Family>
  readonly messages: ReadonlyArray<Message>
  readonly kwargs?: Record<string, unknown>
}

const CASES: ReadonlyArray<Case> = [
  {
    // Llama 3.2 writes today's date (strftime_now) and 3.1/3.3 a fixed one, unless date_string is given.
    name: "pinned date",
    families: ["llama3", "llama3.3"],
    kwargs: { date_string: "05 Mar 2025" },
    messages: [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello." },
    ],
  },
  {
    name: "system",
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "What is 2+3?" },
      { role: "assistant", content: "5" },
    ],
  },
  {
    name: "multi-turn",
    messages: [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello there." },
      { role: "user", content: "Café, 2+3? 😀" },
      { role: "assistant", content: " It is 5. " },
    ],
  },
  {
    name: "multi-turn with system",
    messages: [
      { role: "system", content: "You add numbers." },
      { role: "user", content: "1+1" },
      { role: "assistant", content: "2" },
      { role: "user", content: "2+2" },
      { role: "assistant", content: "4" },
    ],
  },
  {
    name: "thinking",
    families: ["qwen3"],
    messages: [
      { role: "user", content: "Sum 2+3" },
      { role: "assistant", content: "<think>\nAdd them.\n</think>\n\n5" },
      { role: "user", content: "And 3+4?" },
      { role: "assistant", content: "<think>\nAgain.\n</think>\n\n7" },
    ],
  },
  {
    name: "no thinking",
    families: ["qwen3"],
    kwargs: { enable_thinking: false },
    messages: [
      { role: "user", content: "Sum 2+3" },
      { role: "assistant", content: "5" },
      { role: "user", content: "And 3+4?" },
      { role: "assistant", content: "7" },
    ],
  },
]

/** What each family trains on for each case: the reply as the template writes it and its end of turn. */
const TRAINED: Record<Family, Record<string, string>> = {
  llama3: {
    "pinned date": "Hello.<|eot_id|>",
    system: "5<|eot_id|>",
    "multi-turn": "Hello there.<|eot_id|>It is 5.<|eot_id|>",
    "multi-turn with system": "2<|eot_id|>4<|eot_id|>",
  },
  "llama3.3": {
    "pinned date": "Hello.<|eot_id|>",
    system: "5<|eot_id|>",
    "multi-turn": "Hello there.<|eot_id|>It is 5.<|eot_id|>",
    "multi-turn with system": "2<|eot_id|>4<|eot_id|>",
  },
  "qwen2.5": {
    system: "5<|im_end|>\n",
    "multi-turn": "Hello there.<|im_end|>\n It is 5. <|im_end|>\n",
    "multi-turn with system": "2<|im_end|>\n4<|im_end|>\n",
  },
  qwen3: {
    system: "<think>\n\n</think>\n\n5<|im_end|>\n",
    "multi-turn": "Hello there.<|im_end|>\n<think>\n\n</think>\n\n It is 5. <|im_end|>\n",
    "multi-turn with system": "2<|im_end|>\n<think>\n\n</think>\n\n4<|im_end|>\n",
    // Past turns lose their thinking; the last keeps it.
    thinking: "5<|im_end|>\n<think>\nAgain.\n</think>\n\n7<|im_end|>\n",
    // enable_thinking=false puts the empty thinking in the generation prompt: the model is given it, not taught it.
    "no thinking": "5<|im_end|>\n7<|im_end|>\n",
  },
  mistral: {
    system: " 5</s>",
    "multi-turn": " Hello there.</s> It is 5.</s>",
    "multi-turn with system": " 2</s> 4</s>",
  },
  smollm2: {
    system: "5<|im_end|>\n",
    "multi-turn": "Hello there.<|im_end|>\n It is 5. <|im_end|>\n",
    "multi-turn with system": "2<|im_end|>\n4<|im_end|>\n",
  },
}

interface Rendered {
  readonly text: string
  readonly ids: number[]
}
interface Reference {
  readonly now: string
  readonly families: Record<
    Family,
    {
      readonly dir: string
      readonly eos: number[]
      readonly eos_tokens: string[]
      readonly bos_id: number | null
      readonly adds_bos: boolean
      readonly cases: Array<{ name: string; full: Rendered; prompt: Rendered }>
    }
  >
}

const casesOf = (family: Family) =>
  CASES.filter((c) => c.families === undefined || c.families.includes(family))

describe.skipIf(!ready)("a model directory's chat template, as transformers' apply_chat_template", () => {
  let ref: Reference
  beforeAll(() => {
    const root = tmpDir("chat-templates")
    ref = JSON.parse(
      runPython([script], JSON.stringify({ gpt2: gpt2Json, templates, root, cases: CASES })),
    ) as Reference
  }, 120_000)

  for (const family of FAMILIES)
    it(`${family}: the text, the ids, the reply's labels, the generation prompt and the EOS ids`, async () => {
      const fam = ref.families[family]
      const tok = await loadTokenizer(fam.dir)
      expect([...tok.eosIds].sort()).toEqual([...fam.eos].sort())
      // eval stops at every one of them, as ids and as text.
      expect(defaultStops("chat_template", tok).sort()).toEqual([...fam.eos_tokens].sort())
      expect(tok.addsBos).toBe(fam.adds_bos)
      expect(tok.chatTemplate).toBe(fs.readFileSync(path.join(templates, templateOf(family)), "utf8"))
      const cases = casesOf(family)
      expect(fam.cases.map((c) => c.name)).toEqual(cases.map((c) => c.name))
      const dir = tmpDir("chat-run")
      for (const [i, c] of cases.entries()) {
        const want = fam.cases[i]!
        const renderer = await makeRenderer("chat_template", {
          ...tokenizerTemplateOptions(tok, c.kwargs),
          now: () => new Date(ref.now),
        })
        const record = { messages: [...c.messages] }
        const parts = renderer.render(record)
        expect(parts.map((p) => p.text).join(""), `${family} ${c.name}`).toBe(want.full.text)
        if (typeof c.kwargs?.date_string === "string")
          expect(want.full.text).toContain(`Today Date: ${c.kwargs.date_string}`)
        expect(renderer.prompt(record), `${family} ${c.name} prompt`).toBe(want.prompt.text)

        // The eval step's prompt: apply_chat_template(messages before the reply, add_generation_prompt=True).
        const prompts = await preparePrompts(
          writeRecords(dir, [record], "prompts.jsonl"),
          renderer,
          tok,
          fam.adds_bos && fam.bos_id !== null ? fam.bos_id : undefined,
          1,
        )
        expect(prompts.prompts[0]!.ids, `${family} ${c.name} prompt ids`).toEqual(want.prompt.ids)
      }

      // The tokenize step, one run per set of template arguments: ids exactly apply_chat_template(tokenize=True),
      // one BOS (also with addBos: true on a template that writes it), no EOS after the end of turn.
      const groups = new Map<string, number[]>()
      cases.forEach((c, i) => {
        const key = JSON.stringify(c.kwargs ?? null)
        groups.set(key, [...(groups.get(key) ?? []), i])
      })
      for (const [key, members] of groups) {
        const kwargs = JSON.parse(key) as Record<string, unknown> | null
        const records = writeRecords(
          dir,
          members.map((i) => ({ messages: [...cases[i]!.messages] })),
        )
        for (const addBos of fam.bos_id === null ? (["auto"] as const) : (["auto", true] as const)) {
          const run = await runTokenizeStep(
            {
              template: "chat_template",
              maxLength: 4096,
              addBos,
              ...(kwargs ? { templateKwargs: kwargs } : {}),
            },
            { records, tokenizer: fam.dir },
          )
          const data = readTokens(run.tokensDir)
          expect(data.meta.count).toBe(members.length)
          for (const [k, i] of members.entries()) {
            const c = cases[i]!
            const seq = data.sequence(k)
            expect([...seq.tokens], `${family} ${c.name} ids (addBos ${addBos})`).toEqual(
              fam.cases[i]!.full.ids,
            )
            const trained = [...seq.tokens].filter((_, t) => seq.labels[t] !== -100)
            expect(await tok.decode(trained, { skipSpecial: false }), `${family} ${c.name} trained`).toBe(
              TRAINED[family][c.name],
            )
          }
          // Llama 3.2 without date_string writes today's date: the report says so, and how to pin it.
          const notes = (JSON.parse(fs.readFileSync(run.reportFile, "utf8")) as TokenizeReport).tokenizer
            .notes
          const dated = family === "llama3" && kwargs?.date_string === undefined
          expect(
            notes.some((n) => /writes today's date .*date_string/.test(n)),
            `${family} notes`,
          ).toBe(dated)
        }
      }
    })
})

const templateOf = (family: Family): string =>
  ({
    llama3: "llama-3.2-instruct.jinja",
    "llama3.3": "llama-3.3-instruct.jinja",
    "qwen2.5": "qwen2.5-instruct.jinja",
    qwen3: "qwen3.jinja",
    mistral: "mistral-7b-instruct-v0.3.jinja",
    smollm2: "smollm2-instruct.jinja",
  })[family]
