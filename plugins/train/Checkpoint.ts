/**
 * Trainer checkpoints: one safetensors file holding the trainable weights,
 * the optimizer moments and (in its metadata) the loop's state, written to a
 * temporary name, fsynced and renamed, so a kill at any moment leaves either
 * the previous checkpoint or the new one, never a torn file.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type HostTensor, readSafetensors, writeSafetensors } from "./Safetensors.ts"

export interface LoopState {
  /** Optimizer steps done. */
  readonly step: number
  readonly bestValLoss: number | null
  readonly bestStep: number | null
  /** Evaluations since the best one (early-stopping patience). */
  readonly badEvals: number
  readonly stoppedEarly: boolean
  readonly lastTrainLoss: number | null
  /** A fingerprint of the job; a checkpoint from another job is ignored. */
  readonly job: string
}

export const writeAtomic = (file: string, bytes: Uint8Array): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  const fd = fs.openSync(tmp, "w")
  try {
    let off = 0
    while (off < bytes.length) off += fs.writeSync(fd, bytes, off)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
}

export const CHECKPOINT = "checkpoint.safetensors"
export const BEST = "best.safetensors"

export const saveCheckpoint = (dir: string, tensors: Map<string, HostTensor>, state: LoopState): void => {
  fs.mkdirSync(dir, { recursive: true })
  writeAtomic(path.join(dir, CHECKPOINT), writeSafetensors(tensors, { state: JSON.stringify(state) }))
}

export const loadCheckpoint = (
  dir: string,
  job: string,
): { tensors: Map<string, HostTensor>; state: LoopState } | undefined => {
  const file = path.join(dir, CHECKPOINT)
  if (!fs.existsSync(file)) return undefined
  const { tensors, metadata } = readSafetensors(file)
  const state = JSON.parse(metadata.state ?? "{}") as LoopState
  if (state.job !== job) return undefined
  return { tensors, state }
}
