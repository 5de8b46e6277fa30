#!/usr/bin/env node
import { existsSync } from "node:fs"

const cli = new URL("../dist/cli.js", import.meta.url)
if (!existsSync(cli)) {
  process.stderr.write("tunegraph is not built: run `npm run build` in its folder (npm ci does it too)\n")
  process.exit(2)
}
const { main } = await import(cli.href)
const code = await main(process.argv.slice(2))
process.exitCode = code
// Leave time for stdout to drain, but do not wait on idle handles (worker pools, esbuild).
setTimeout(() => process.exit(code), 200).unref()
