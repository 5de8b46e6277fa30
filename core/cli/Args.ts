/** A small, strict argument parser: repeated flags collect, unknown flags are errors. */
export class UsageError extends Error {
  override readonly name = "UsageError"
}

export interface FlagSpec {
  readonly [flag: string]: "boolean" | "string" | "list"
}

export interface Parsed {
  readonly positionals: string[]
  readonly flags: Record<string, string | boolean | string[] | undefined>
}

export const parseArgs = (
  argv: ReadonlyArray<string>,
  spec: FlagSpec,
  aliases: Record<string, string> = {},
): Parsed => {
  const positionals: string[] = []
  const flags: Record<string, string | boolean | string[] | undefined> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === "--") {
      positionals.push(...argv.slice(i + 1))
      break
    }
    if (!a.startsWith("-") || a === "-") {
      positionals.push(a)
      continue
    }
    let name = a.replace(/^--?/, "")
    let value: string | undefined
    const eq = name.indexOf("=")
    if (eq >= 0) {
      value = name.slice(eq + 1)
      name = name.slice(0, eq)
    }
    name = aliases[name] ?? name
    // every command that takes --store takes --objects, a shared store's other half
    const kind = spec[name] ?? (name === "objects" && spec.store === "string" ? "string" : undefined)
    if (kind === undefined) throw new UsageError(`unknown option --${name}`)
    if (kind === "boolean") {
      if (value !== undefined) throw new UsageError(`--${name} takes no value`)
      flags[name] = true
      continue
    }
    if (value === undefined) {
      value = argv[i + 1]
      if (value === undefined) throw new UsageError(`--${name} needs a value`)
      i++
    }
    if (kind === "list") flags[name] = [...((flags[name] as string[] | undefined) ?? []), value]
    else flags[name] = value
  }
  return { positionals, flags }
}

export const list = (p: Parsed, name: string): string[] => (p.flags[name] as string[] | undefined) ?? []
export const str = (p: Parsed, name: string): string | undefined => p.flags[name] as string | undefined
export const bool = (p: Parsed, name: string): boolean => p.flags[name] === true
export const int = (p: Parsed, name: string): number | undefined => {
  const v = str(p, name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} expects a whole number, got ${v}`)
  return n
}
