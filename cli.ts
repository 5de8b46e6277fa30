/** The command-line entry: the engine's CLI plus the commands plugins contribute. */

import { main as engineMain } from "./core/cli/Main.ts"
import { setEngineUrl } from "./core/Loader.ts"

// Pipeline files import "tunegraph": they get this very build's library module.
setEngineUrl(new URL("./index.js", import.meta.url).href)

export const main = (argv: ReadonlyArray<string>) =>
  engineMain(argv, {
    generate: async () => {
      const { generateCommand } = await import("./plugins/train/GenerateCommand.ts")
      return (args) => generateCommand([...args])
    },
  })
