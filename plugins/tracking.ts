/**
 * What the built-in steps show in MLflow (core/mlflow): training and eval get
 * a child run each (sweep trials are training steps), and these files are
 * uploaded as artifacts: the eval report's human-readable parts and the
 * exports' configs.
 */
import type { TrackingPolicy } from "../core/mlflow/Policy.ts"

export const tracking: TrackingPolicy = {
  runs: ["train-lora", "train-qlora", "train-full", "eval"],
  artifacts: {
    eval: { report: ["report.md", "samples.jsonl"] },
    "export-adapter": { export: ["adapter_config.json"] },
    "export-merged": { export: ["config.json"] },
  },
}
