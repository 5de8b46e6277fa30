/** The built-in step plugins and the artifact kinds they exchange. */

export { dedupe } from "./dedupe/index.ts"
export { evaluate } from "./eval/index.ts"
export { exportAdapter, exportMerged } from "./export/index.ts"
export { ingest } from "./ingest/index.ts"
export { Adapter, Export, Model, Records, Report, Tokenizer, Tokens } from "./kinds.ts"
export { split } from "./split/index.ts"
export { gridTrials, randomTrials, type SweepOptions, selectBest, sweep, trialLabel } from "./sweep/index.ts"
export { tokenize } from "./tokenize/index.ts"
export { trainFull } from "./train-full/index.ts"
export { trainLora } from "./train-lora/index.ts"
export { trainQlora } from "./train-qlora/index.ts"
