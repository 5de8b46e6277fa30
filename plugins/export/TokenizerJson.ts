/**
 * A llama2.c `tok*.bin` as the files Hugging Face loads: `tokenizer.json`
 * (the fast tokenizer transformers' LlamaConverter writes for a
 * SentencePiece BPE model), `tokenizer_config.json` and
 * `special_tokens_map.json`.
 *
 * llama2.c keeps SentencePiece's pieces and scores (with "▁" turned into a
 * space) but no merge list: SentencePiece merges the adjacent pair whose
 * concatenation is the best-scoring piece. A BPE merge list ranked by that
 * score is the same rule, which is how transformers converts a
 * SentencePiece model (SentencePieceExtractor): every split of every piece
 * into two pieces is a merge, ordered by the piece's score.
 */
import { Llama2cTokenizer } from "../tokenize/Tok512.ts"

const SPACE = "\u2581"
/** ids 0..2 are <unk>, BOS and EOS; llama2.c stores them as "<unk>", "\n<s>\n", "\n</s>\n". */
const SPECIAL = ["<unk>", "<s>", "</s>"] as const
const FIRST_BYTE = 3
const BYTES = 256

export interface HfTokenizerFiles {
  readonly "tokenizer.json": Record<string, unknown>
  readonly "tokenizer_config.json": Record<string, unknown>
  readonly "special_tokens_map.json": Record<string, unknown>
}

const addedToken = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
})

/** The vocabulary with Hugging Face's spelling of each piece, and the merges ranked by score. */
export const vocabAndMerges = (
  tok: Llama2cTokenizer,
): { vocab: Map<string, number>; merges: Array<[string, string]> } => {
  const vocab = new Map<string, number>()
  const pieces: string[] = []
  for (let id = 0; id < tok.vocabSize; id++) {
    const piece = id < SPECIAL.length ? (SPECIAL[id] as string) : tok.pieceText(id).replaceAll(" ", SPACE)
    pieces.push(piece)
    // A duplicated piece keeps its first id, as the llama2.c tokenizer looks it up.
    if (!vocab.has(piece)) vocab.set(piece, id)
  }
  const ranked: Array<{ left: string; right: string; score: number; order: number }> = []
  for (let id = FIRST_BYTE + BYTES; id < tok.vocabSize; id++) {
    const piece = pieces[id] as string
    if (vocab.get(piece) !== id) continue
    const chars = [...piece]
    const local: Array<{ left: string; right: string; l: number; r: number }> = []
    for (let cut = 1; cut < chars.length; cut++) {
      const left = chars.slice(0, cut).join("")
      const right = chars.slice(cut).join("")
      const l = vocab.get(left)
      const r = vocab.get(right)
      if (l !== undefined && r !== undefined) local.push({ left, right, l, r })
    }
    local.sort((a, b) => a.l - b.l || a.r - b.r)
    for (const m of local)
      ranked.push({ left: m.left, right: m.right, score: tok.scores[id] as number, order: ranked.length })
  }
  ranked.sort((a, b) => b.score - a.score || a.order - b.order)
  return { vocab, merges: ranked.map((m) => [m.left, m.right]) }
}

/** The three Hugging Face tokenizer files for a llama2.c tokenizer; `maxLength` is the model's context. */
export const hfTokenizerFiles = (tok: Llama2cTokenizer, maxLength: number): HfTokenizerFiles => {
  const { vocab, merges } = vocabAndMerges(tok)
  const [unk, bos, eos] = SPECIAL
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((s, id) => addedToken(id, s)),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: SPACE },
        { type: "Replace", pattern: { String: " " }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [tok.bosId], tokens: [bos] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SPACE }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      // "left right" strings: read by every tokenizers release (pieces hold no plain spaces).
      merges: merges.map(([l, r]) => `${l} ${r}`),
    },
  }
  const config = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(
      SPECIAL.map((s, id) => [String(id), { ...addedToken(id, s), id: undefined }]),
    ),
    bos_token: bos,
    clean_up_tokenization_spaces: false,
    eos_token: eos,
    legacy: true,
    model_max_length: maxLength,
    pad_token: null,
    sp_model_kwargs: {},
    tokenizer_class: "LlamaTokenizerFast",
    unk_token: unk,
    use_default_system_prompt: false,
  }
  const special = { bos_token: bos, eos_token: eos, unk_token: unk }
  return {
    "tokenizer.json": tokenizer,
    "tokenizer_config.json": JSON.parse(JSON.stringify(config)),
    "special_tokens_map.json": special,
  }
}

/** Reads a tok*.bin and returns its Hugging Face files. */
export const hfTokenizerFilesFromBin = (file: string, maxLength: number): HfTokenizerFiles =>
  hfTokenizerFiles(Llama2cTokenizer.fromFile(file), maxLength)
