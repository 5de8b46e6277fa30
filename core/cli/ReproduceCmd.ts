/** `tunegraph reproduce <artifact>`: recompute an artifact without the cache and compare the bytes. */

import { lineage, resolveTarget } from "../Lineage.ts"
import { reproduce } from "../Reproduce.ts"
import { bool, int, parseArgs, str, UsageError } from "./Args.ts"
import { bold, dim, green, makeReporter, red, seconds } from "./Output.ts"
import { defaultCpus } from "./Slots.ts"
import { asUsage, openExistingStore, short } from "./StoreArg.ts"

export const cmdReproduce = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(argv, {
    json: "boolean",
    store: "string",
    scratch: "string",
    keep: "boolean",
    cpus: "string",
    verbose: "boolean",
  })
  const ref = args.positionals[0]
  if (ref === undefined)
    throw new UsageError("usage: tunegraph reproduce <artifact digest | node | exported path> [--json]")
  const store = openExistingStore(args)
  try {
    const digest = asUsage(() => {
      const target = resolveTarget(store, ref)
      if (target.digest !== undefined) return target.digest
      // A node: its first output (the one most nodes have).
      const outs = Object.values(lineage(store, target).steps.at(-1)!.outputs)
      if (outs.length === 0) throw new UsageError(`node "${ref}" recorded no outputs`)
      return outs[0]!.digest
    })
    const json = bool(args, "json")
    const reporter = makeReporter({ verbose: bool(args, "verbose"), quiet: json })
    const scratch = str(args, "scratch")
    if (!json)
      process.stdout.write(`${bold("reproducing")} ${short(digest)} in a scratch store, without the cache\n`)
    const r = await asUsageAsync(() =>
      reproduce(store, digest, {
        ...(scratch === undefined ? {} : { scratchDir: scratch }),
        keep: bool(args, "keep"),
        cpus: int(args, "cpus") ?? defaultCpus(),
        onEvent: reporter.onEvent,
      }),
    )
    reporter.done()
    if (json) {
      process.stdout.write(`${JSON.stringify(r)}\n`)
      return r.identical ? 0 : 1
    }
    process.stdout.write(
      `${dim(`output "${r.output}" of node "${r.node}", computed in run ${r.run}${r.overrides.length > 0 ? ` with --set ${r.overrides.join(" --set ")}` : ""}`)}\n`,
    )
    for (const s of r.steps) {
      const mark = s.sameOutputs ? green("same     ") : red("different")
      const outs = Object.entries(s.reproduced)
        .map(([n, d]) => `${n}=${short(d)}`)
        .join(" ")
      process.stdout.write(`  ${mark} ${s.node.padEnd(24)} ${dim(outs)}\n`)
      if (!s.sameOutputs) {
        for (const reason of s.reasons) process.stdout.write(`            ${dim("-")} ${reason}\n`)
        if (s.reasons.length === 0 && s.sameKey === true)
          process.stdout.write(
            `            ${dim("-")} same recipe, different bytes: the step is not deterministic\n`,
          )
      }
    }
    if (r.scratch !== null) process.stdout.write(dim(`scratch store kept at ${r.scratch}\n`))
    process.stdout.write(
      r.identical
        ? `${green(bold("identical:"))} ${short(digest)} reproduced bit for bit (${r.steps.length} steps, ${seconds(r.ms)})\n`
        : `${red(bold("different:"))} ${short(digest)} came out as ${short(r.reproduced)}${r.divergedAt ? `; first difference at "${r.divergedAt}"` : ""}${r.status === "failed" ? " (a step failed)" : ""}\n`,
    )
    return r.identical ? 0 : 1
  } finally {
    store.close()
  }
}

const asUsageAsync = async <A>(f: () => Promise<A>): Promise<A> => {
  try {
    return await f()
  } catch (e) {
    return asUsage(() => {
      throw e
    })
  }
}
