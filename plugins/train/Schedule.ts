/**
 * Learning rate per optimizer step, as Hugging Face transformers' schedulers
 * give it (optimizer step `step`, 0-based, runs at the rate LambdaLR holds
 * before its `step`-th `scheduler.step()`):
 *
 *   warmup   lr · step / max(1, warmupSteps) while step < warmupSteps
 *            (0 at step 0; a warmup as long as the run never reaches lr)
 *   cosine   lr · (f (1 − minLr/lr) + minLr/lr), f = ½ (1 + cos(π p)),
 *            p = (step − warmupSteps) / max(1, totalSteps − warmupSteps):
 *            get_cosine_with_min_lr_schedule_with_warmup(min_lr=minLr), and
 *            get_cosine_schedule_with_warmup when minLr is 0
 *   linear   the same with f = max(0, (totalSteps − step) / max(1, totalSteps − warmupSteps)):
 *            get_linear_schedule_with_warmup when minLr is 0. Decaying to
 *            minLr > 0 instead of 0 is tunegraph's own extension, the
 *            linear counterpart of the cosine schedule's min_lr.
 *   constant lr after warmup (minLr unused): get_constant_schedule_with_warmup
 *
 * From step totalSteps on (which the trainer never runs) the rate is minLr,
 * or lr for "constant"; transformers' cosine would rise again there.
 */
export interface ScheduleOptions {
  readonly lr: number
  readonly minLr: number
  readonly warmupSteps: number
  readonly totalSteps: number
  readonly schedule: "cosine" | "linear" | "constant"
}

/** The rate for optimizer step `step` (0-based), as Hugging Face's schedulers give it. */
export const learningRate = (o: ScheduleOptions, step: number): number => {
  const warm = o.warmupSteps
  if (step >= o.totalSteps) return o.schedule === "constant" ? o.lr : o.minLr
  if (step < warm) return o.lr * (step / Math.max(1, warm))
  if (o.schedule === "constant") return o.lr
  const span = Math.max(1, o.totalSteps - warm)
  // Written as transformers computes it (num_cycles 0.5, min_lr_rate = minLr / lr), so the doubles agree.
  const factor =
    o.schedule === "cosine"
      ? 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * ((step - warm) / span)))
      : Math.max(0, (o.totalSteps - step) / span)
  const rate = o.lr > 0 ? o.minLr / o.lr : 0
  return o.lr * Math.max(0, factor * (1 - rate) + rate)
}
