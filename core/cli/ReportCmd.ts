/** `tunegraph report <run> [-o report.html]`: one self-contained HTML page about a run. */
import * as fs from "node:fs"
import * as path from "node:path"
import { reportData } from "../report/Data.ts"
import { renderReport } from "../report/Html.ts"
import { bool, parseArgs, str, UsageError } from "./Args.ts"
import { asUsage, bytes, openExistingStore, runRef } from "./StoreArg.ts"

export const cmdReport = (argv: ReadonlyArray<string>): number =>
  asUsage(() => {
    const args = parseArgs(argv, { output: "string", store: "string", json: "boolean" }, { o: "output" })
    const ref = args.positionals[0] ?? "last"
    if (args.positionals.length > 1)
      throw new UsageError("usage: tunegraph report [<run>|last] [-o report.html]")
    const store = openExistingStore(args)
    try {
      const id = runRef(store, ref)
      const data = reportData(store, id)
      if (bool(args, "json")) {
        process.stdout.write(`${JSON.stringify(data)}\n`)
        return 0
      }
      const file = path.resolve(str(args, "output") ?? `report-${id}.html`)
      const html = renderReport(data)
      const tmp = `${file}.${process.pid}.tmp`
      fs.writeFileSync(tmp, html)
      fs.renameSync(tmp, file)
      process.stdout.write(
        `wrote ${path.relative(process.cwd(), file) || file} (${bytes(Buffer.byteLength(html))})\n`,
      )
      return 0
    } finally {
      store.close()
    }
  })
