/**
 * The artifact kinds of fine-tuning pipelines, and their on-disk layouts.
 * Steps agree on these layouts; the engine only sees files and digests.
 */
import { Schema } from "effect"
import { kind } from "../core/Artifact.ts"

/**
 * Records: a directory of UTF-8 JSON Lines parts listed in parts.json
 * (plugins/ingest/RecordParts.ts), one canonical record per line
 * (core/Canonical.ts key order, no spaces), so the same records read from a
 * CSV or a JSONL have the same digest. Each line is one of the three
 * canonical shapes (plugins/ingest/Records.ts):
 *   instruction {instruction, input?, output}
 *   completion  {prompt, completion}
 *   chat        {messages: [{role: "system"|"user"|"assistant", content}]}
 * plus an optional `meta` object of passthrough fields (intent, category...).
 */
export const Records = kind(
  "Records",
  Schema.Struct({
    count: Schema.Number,
    recordKind: Schema.Literals(["instruction", "completion", "chat"]),
  }),
)

/**
 * Tokens: a directory, as the tokenize step writes it, sharded into parts (so
 * an append shares the unchanged parts with the previous output):
 *   meta.json     {count, tokens, vocabSize, bosId, eosId, padId, maxLength, packed, tokenizer, format,
 *                 trainOnInputs, examples, trainTokens, labels, parts}: the totals, and
 *                 parts: [{dir: "part-000000", count, tokens}, ...], the sequences in that order
 *   part-000000/  each part (at least one whole sequence; a packed sequence never spans two):
 *     tokens.u32    its sequences' token ids, concatenated, uint32 little-endian
 *     labels.i32    the same length; -100 where the loss ignores the token (masked prompt, padding)
 *     offsets.u32   count + 1 local start offsets, from 0 to the part's token count
 *                   (sequence i is [offsets[i], offsets[i+1]))
 *     segments.u32  only when packed: per token, the index of its example inside the packed sequence,
 *                   so attention and positions restart at each example boundary
 * A meta.json without "parts" is flat (written by hand or by older versions):
 * the four arrays sit beside it, over all sequences. An empty set has count 0
 * and, sharded, "parts": [].
 */
export const Tokens = kind(
  "Tokens",
  Schema.Struct({
    count: Schema.Number,
    tokens: Schema.Number,
    vocabSize: Schema.Number,
    maxLength: Schema.Number,
    packed: Schema.Boolean,
  }),
)

/** A tokenizer source: a Hugging Face tokenizer.json (with tokenizer_config.json beside it), or llama2.c's tok*.bin. */
export const Tokenizer = kind("Tokenizer")

/**
 * Model: a Hugging Face Llama directory (config.json, model.safetensors,
 * tokenizer files when known) written by train-full, or, as a source, either
 * such a directory or a llama2.c checkpoint file.
 */
export const Model = kind("Model")

/** Adapter: a PEFT LoRA directory (adapter_config.json, adapter_model.safetensors) plus `training.json`. */
export const Adapter = kind("Adapter")

/** Report: one JSON file a step writes about what it did (counts, distributions, samples, scores). */
export const Report = kind("Report")

/** Export: a directory written outside the store by the export step (its copy in the store is the artifact). */
export const Export = kind("Export")
