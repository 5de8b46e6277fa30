/** `gc`, `pin` and `unpin`: keeping the store tidy. */
import { collectGarbage, pin, unpin } from "../../cache/Gc.ts"
import { lineage, resolveTarget } from "../Lineage.ts"
import { bool, int, parseArgs, str, UsageError } from "./Args.ts"
import { bold, dim } from "./Output.ts"
import { asUsage, bytes, openExistingStore, short } from "./StoreArg.ts"

const out = (s: string) => process.stdout.write(s)
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

export const cmdGc = (argv: ReadonlyArray<string>): number =>
  asUsage(() => {
    const args = parseArgs(argv, {
      "keep-last": "string",
      "dry-run": "boolean",
      json: "boolean",
      store: "string",
    })
    const store = openExistingStore(args)
    try {
      const r = collectGarbage(store, {
        keepLast: int(args, "keep-last") ?? 3,
        dryRun: bool(args, "dry-run"),
      })
      if (bool(args, "json")) {
        out(`${JSON.stringify(r)}\n`)
        return 0
      }
      const d = r.deleted
      const would = r.dryRun ? "would remove" : "removed"
      out(
        `${r.dryRun ? dim("dry run: nothing deleted\n") : ""}kept ${plural(r.keptRuns, "run")}${r.inProgress.length > 0 ? ` (${r.inProgress.length} in progress)` : ""}; ${would} ${plural(d.runs, "run")}, ${plural(d.executions, "execution")}, ${plural(d.cacheEntries, "cache entry").replace("entrys", "entries")}, ${plural(d.chunkEntries, "chunk entry").replace("entrys", "entries")}, ${plural(d.artifacts, "artifact")}, ${plural(d.garbageObjects, "unreferenced object")}, ${plural(d.tmp, "tmp entry").replace("entrys", "entries")}, ${plural(d.checkpoints, "checkpoint")}\n`,
      )
      out(
        `${bold(`${r.dryRun ? "would free" : "freed"} ${bytes(r.bytes.total)}`)}${dim(` (${r.bytes.total} bytes)`)}\n`,
      )
      return 0
    } finally {
      store.close()
    }
  })

const pinning = (argv: ReadonlyArray<string>, on: boolean): number =>
  asUsage(() => {
    const args = parseArgs(argv, { note: "string", store: "string", json: "boolean" })
    const ref = args.positionals[0]
    if (ref === undefined)
      throw new UsageError(`usage: tunegraph ${on ? "pin" : "unpin"} <digest | node | exported path>`)
    const store = openExistingStore(args)
    try {
      const target = resolveTarget(store, ref)
      // A node means every output of its latest execution.
      const digests =
        target.digest !== undefined
          ? [target.digest]
          : Object.values(lineage(store, target).steps.at(-1)!.outputs).map((o) => o.digest)
      const changed = digests.map((d) => ({
        digest: d,
        changed: on ? pin(store, d, str(args, "note")) : unpin(store, d),
      }))
      if (bool(args, "json")) out(`${JSON.stringify({ [on ? "pinned" : "unpinned"]: changed })}\n`)
      else
        for (const c of changed)
          out(
            `${short(c.digest)} ${c.changed ? (on ? "pinned" : "unpinned") : on ? "was already pinned" : "was not pinned"}\n`,
          )
      return 0
    } finally {
      store.close()
    }
  })

export const cmdPin = (argv: ReadonlyArray<string>) => pinning(argv, true)
export const cmdUnpin = (argv: ReadonlyArray<string>) => pinning(argv, false)
