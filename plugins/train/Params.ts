/**
 * Parameters of the three training steps. This module is imported by the
 * plugin definitions, so it loads only `effect` and core/.
 */
import { Schema } from "effect"
import { withDefault } from "../../core/Plugin.ts"
import { BACKEND_CHOICES } from "./BackendChoice.ts"

const Positive = Schema.Number.check(Schema.isGreaterThan(0))
const NonNegative = Schema.Number.check(Schema.isGreaterThanOrEqualTo(0))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const PositiveCount = Schema.Int.check(Schema.isGreaterThan(0))
const Fraction = Schema.Number.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1))

/** The backend a step computes on (plugins/train/BackendChoice.ts resolves it before the key is built). */
export const Backend = Schema.Literals(BACKEND_CHOICES).pipe(withDefault("auto"))

/** The fields every trainer shares; `lr` and `weightDecay` defaults differ per step. */
export const trainerFields = (defaults: { lr: number; weightDecay: number }) => ({
  /** Seeds shuffling, dropout and LoRA initialisation. */
  seed: Count.pipe(withDefault(0)),
  /** Passes over the training split (used when `steps` is 0). */
  epochs: Positive.pipe(withDefault(1)),
  /** Optimizer steps to take; 0 derives them from `epochs`. */
  steps: Count.pipe(withDefault(0)),
  /** Sequences per micro-batch. */
  batchSize: PositiveCount.pipe(withDefault(8)),
  /** Micro-batches whose gradients add up to one optimizer step. */
  gradAccum: PositiveCount.pipe(withDefault(1)),
  /** Longer sequences are cut to this many tokens. */
  maxSeqLen: PositiveCount.pipe(withDefault(512)),
  /** Peak learning rate. */
  lr: Positive.pipe(withDefault(defaults.lr)),
  /** Learning rate the decay ends at. */
  minLr: NonNegative.pipe(withDefault(0)),
  warmupSteps: Count.pipe(withDefault(0)),
  schedule: Schema.Literals(["cosine", "linear", "constant"]).pipe(withDefault("cosine")),
  /** Decoupled (AdamW) weight decay, on matrices only. */
  weightDecay: NonNegative.pipe(withDefault(defaults.weightDecay)),
  beta1: Fraction.pipe(withDefault(0.9)),
  beta2: Fraction.pipe(withDefault(0.999)),
  eps: Positive.pipe(withDefault(1e-8)),
  /** Gradients are scaled down to this global L2 norm; 0 turns clipping off. */
  clipNorm: NonNegative.pipe(withDefault(1)),
  /** Evaluate on the validation split every this many steps (and at the end); 0: only at the end. */
  evalEvery: Count.pipe(withDefault(50)),
  /** Validation batches per evaluation; 0: the whole split. */
  evalBatches: Count.pipe(withDefault(0)),
  /** Stop after this many evaluations without improvement; 0 never stops early. */
  patience: Count.pipe(withDefault(0)),
  /** An improvement must lower the validation loss by more than this. */
  minDelta: NonNegative.pipe(withDefault(0)),
  /** Output the weights of the best validation loss rather than the last ones. */
  keepBest: Schema.Boolean.pipe(withDefault(true)),
  /** Save a checkpoint (resumed after an interruption) every this many steps; 0: never. */
  checkpointEvery: Count.pipe(withDefault(25)),
  /**
   * Data-parallel worker threads on the tfjs CPU backends (WebAssembly, plain JS), where tfjs computes
   * on one thread, and torch's threads on torch-cpu; native tfjs backends and CUDA use one. The result
   * depends on this number, never on the machine.
   */
  shards: PositiveCount.pipe(withDefault(2)),
  /** auto (torch-cuda, torch-cpu, then tfjs-node-gpu, tfjs-node, wasm, cpu), torch (CUDA, else CPU), or one backend. */
  backend: Backend,
  /** Compute precision: auto is bfloat16 on a GPU that supports it (float32 master weights), else float32. */
  precision: Schema.Literals(["auto", "float32", "bfloat16"]).pipe(withDefault("auto")),
  /** Recompute activations in the backward pass (torch backend): less memory, about a third more compute. */
  gradientCheckpointing: Schema.Boolean.pipe(withDefault(false)),
})

export const LoraTarget = Schema.Literals([
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
])

export const loraFields = {
  /** Rank of the update. */
  r: PositiveCount.pipe(withDefault(8)),
  /** Scale numerator: the update is scaled by alpha / r (alpha / √r with rslora). */
  alpha: Positive.pipe(withDefault(16)),
  /** Dropout on the LoRA branch's input. */
  dropout: Fraction.pipe(withDefault(0.05)),
  /** Projections that get an adapter (attention projections by default). */
  targets: Schema.Array(LoraTarget).pipe(withDefault(["q_proj", "k_proj", "v_proj", "o_proj"])),
  /** Rank-stabilised LoRA scaling. */
  rslora: Schema.Boolean.pipe(withDefault(false)),
}

export const FullParams = Schema.Struct(trainerFields({ lr: 3e-4, weightDecay: 0.01 }))
export const LoraParams = Schema.Struct({ ...trainerFields({ lr: 1e-3, weightDecay: 0 }), ...loraFields })
export type FullParams = typeof FullParams.Type
export type LoraParams = typeof LoraParams.Type
export type TrainParams = FullParams & Partial<Omit<LoraParams, keyof FullParams>>
