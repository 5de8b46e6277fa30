/**
 * What the MLflow logging knows of particular plugins: the engine knows
 * none; the plugins' package sets it (cli.ts).
 */
export interface TrackingPolicy {
  /** Plugins whose steps get a nested child run even without a metric (training, eval). */
  readonly runs: ReadonlyArray<string>
  /** Per plugin and output, the files of the output directory uploaded as artifacts ("*": all of them). */
  readonly artifacts: Readonly<Record<string, Readonly<Record<string, ReadonlyArray<string> | "*">>>>
}

let policy: TrackingPolicy = { runs: [], artifacts: {} }

export const setTrackingPolicy = (p: TrackingPolicy) => {
  policy = p
}

export const trackingPolicy = (): TrackingPolicy => policy
