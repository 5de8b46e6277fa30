/**
 * What a function given as a parameter (an eval scorer) depends on, so that
 * its key changes when a constant or helper it uses changes, and not when an
 * unrelated part of the pipeline file does.
 *
 * The pipeline file is bundled by esbuild (core/Loader.ts) into one module
 * whose top-level statements start at column 0. Each `var`/`let`/`const`,
 * `function`, `class` and `import` statement there declares names. A
 * function's dependencies are the top-level declarations its source names,
 * and theirs in turn; its fingerprint hashes its own source with theirs.
 * Over-approximation (a property that shares a binding's name) only re-runs
 * a step more often, never less.
 */
import { createHash } from "node:crypto"

const IDENT = /[A-Za-z_$][\w$]*/g
const STARTS = /^(?:export\s+)?(?:var|let|const|async\s+function\*?|function\*?|class|import)\b/

/** The bundle's top-level statements by the names they declare. */
export const topLevelDeclarations = (bundle: string): Map<string, string> => {
  const code = bundle.replace(/\n\/\/# sourceMappingURL=.*$/s, "")
  const chunks: string[] = []
  let current: string[] | undefined
  for (const line of code.split("\n")) {
    const top = line.length > 0 && !/^[\s})\]]/.test(line)
    if (top) {
      if (current !== undefined) chunks.push(current.join("\n"))
      current = STARTS.test(line) ? [line] : undefined
    } else current?.push(line)
  }
  if (current !== undefined) chunks.push(current.join("\n"))
  const out = new Map<string, string>()
  for (const chunk of chunks) for (const name of declaredNames(chunk)) out.set(name, chunk)
  return out
}

const declaredNames = (chunk: string): string[] => {
  const s = chunk.replace(/^export\s+/, "")
  const fn = /^(?:async\s+)?function\*?\s*([\w$]+)/.exec(s) ?? /^class\s+([\w$]+)/.exec(s)
  if (fn !== null) return [fn[1]!]
  if (s.startsWith("import")) {
    const clause = /^import\s+([\s\S]*?)\s+from\s/.exec(s)?.[1] ?? ""
    return [...clause.matchAll(/(?:\bas\s+)?([\w$]+)\s*(?=,|}|$)/g)]
      .map((m) => m[1]!)
      .filter((n) => n !== "as")
  }
  // var a = ..., b = ...; var { x: y, z } = ...; only the names before each top-level `=`.
  const body = s.replace(/^(?:var|let|const)\s+/, "")
  const names: string[] = []
  let depth = 0
  let lhs = true
  let token = ""
  for (let i = 0; i < body.length; i++) {
    const ch = body[i]!
    if (lhs) {
      if (ch === "=" && depth === 0 && body[i + 1] !== "=") {
        lhs = false
        names.push(...patternNames(token))
        token = ""
        continue
      }
      token += ch
      if (ch === "{" || ch === "[") depth++
      else if (ch === "}" || ch === "]") depth--
      continue
    }
    if ("([{".includes(ch)) depth++
    else if (")]}".includes(ch)) depth--
    else if (ch === "," && depth === 0) lhs = true
    else if (ch === ";" && depth === 0) break
    else if (ch === '"' || ch === "'" || ch === "`") i = skipString(body, i)
  }
  return names
}

/** Binding names of a declarator's left side: `a`, `{ x: y, z }`, `[p, q]`. */
const patternNames = (lhs: string): string[] =>
  [...lhs.replace(/[\w$]+\s*:/g, "").matchAll(IDENT)].map((m) => m[0])

const skipString = (s: string, i: number): number => {
  const q = s[i]
  for (let j = i + 1; j < s.length; j++) {
    if (s[j] === "\\") j++
    else if (s[j] === q) return j
  }
  return s.length
}

/** Identifiers a piece of code names (not as a property after a dot). */
const referenced = (code: string): Set<string> => {
  const out = new Set<string>()
  for (const m of code.matchAll(IDENT)) if (code[(m.index ?? 0) - 1] !== ".") out.add(m[0])
  return out
}

/** The top-level declarations a function's source reaches, directly or through others, in a stable order. */
export const dependencies = (source: string, declarations: ReadonlyMap<string, string>): string[] => {
  const seen = new Set<string>()
  const chunks = new Set<string>()
  const visit = (code: string) => {
    for (const name of referenced(code)) {
      if (seen.has(name)) continue
      seen.add(name)
      const chunk = declarations.get(name)
      if (chunk === undefined || chunks.has(chunk)) continue
      chunks.add(chunk)
      visit(chunk)
    }
  }
  visit(source)
  return [...chunks].sort()
}

/** sha256 of the function's source, with its dependencies' when it has any (so a self-contained one keys as before). */
export const functionFingerprint = (
  fn: { toString(): string },
  declarations: ReadonlyMap<string, string>,
): string => {
  const source = fn.toString()
  const deps = dependencies(source, declarations).filter((d) => d.trim() !== source.trim())
  const h = createHash("sha256").update(source)
  for (const d of deps) h.update("\0").update(d)
  return h.digest("hex")
}
