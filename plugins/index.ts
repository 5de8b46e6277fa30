/** The built-in step plugins and the artifact kinds they exchange. */
export { Adapter, Export, Model, Records, Report, Tokenizer, Tokens } from "./kinds.ts"
