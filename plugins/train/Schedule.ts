/** Learning rate per optimizer step: linear warmup, then cosine, linear or constant decay to minLr. */
export interface ScheduleOptions {
  readonly lr: number
  readonly minLr: number
  readonly warmupSteps: number
  readonly totalSteps: number
  readonly schedule: "cosine" | "linear" | "constant"
}

/** The rate for optimizer step `step` (0-based), as Hugging Face's schedulers give it. */
export const learningRate = (o: ScheduleOptions, step: number): number => {
  const warm = Math.min(o.warmupSteps, o.totalSteps)
  if (step < warm) return (o.lr * (step + 1)) / (warm + 1)
  if (o.schedule === "constant") return o.lr
  const span = Math.max(1, o.totalSteps - warm)
  const progress = Math.min(1, (step - warm) / span)
  const factor = o.schedule === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress
  return o.minLr + (o.lr - o.minLr) * factor
}
