/** The command-line entry: the engine's CLI plus the commands plugins contribute. */

import { main as engineMain } from "./core/cli/Main.ts"
import { setEngineUrl } from "./core/Loader.ts"
import { setTrackingPolicy } from "./core/mlflow/Policy.ts"
import { tracking } from "./plugins/tracking.ts"

// Pipeline files import "tunegraph": they get this very build's library module.
setEngineUrl(new URL("./index.js", import.meta.url).href)
setTrackingPolicy(tracking)

const USAGE = `tunegraph generate --model <dir|file.bin> [--adapter DIR] [--tokenizer FILE] [--prompt TEXT]
                   [--max-tokens N] [--temperature T] [--seed S]
tunegraph backends [--json]      (the training backends, what each runs on, and auto's pick)
`

export const main = (argv: ReadonlyArray<string>) =>
  engineMain(
    argv,
    {
      generate: async () => {
        const { generateCommand } = await import("./plugins/train/GenerateCommand.ts")
        return (args) => generateCommand([...args])
      },
      backends: async () => {
        const { backendsCommand } = await import("./plugins/train/BackendsCommand.ts")
        return backendsCommand
      },
    },
    USAGE,
  )
