/** The built-in step plugins and the artifact kinds they exchange. */
export { Adapter, Export, Model, Records, Report, Tokenizer, Tokens } from "./kinds.ts"
export { gridTrials, randomTrials, type SweepOptions, selectBest, sweep, trialLabel } from "./sweep/index.ts"
