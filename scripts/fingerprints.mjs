// Code fingerprints of the built-in plugins, from the modules their code really
// imports. For each plugins/<folder>/index.ts, esbuild follows its static and
// dynamic imports (core included, and the worker entries, *Worker.ts, of every
// folder it reaches); each module counts by its minified form, so an edit to a
// comment or to formatting changes nothing. Files beside the TypeScript that a
// step runs (the torch backend's Python worker, its requirements) count by
// their bytes. The npm packages the graph imports are listed too: their exact
// versions enter the step's environment (core/Plugin.ts).
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as esbuild from "esbuild"

const RUNTIME_FILES = /\.(py|txt|json|toml|cfg)$/
// The engine's own runtime (bundled with it) and its tooling: their versions are the engine's, not a step's library.
const ENGINE_PACKAGES = /^(effect|@effect\/.*|esbuild)$/

const walk = (dir) =>
  fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.name !== "__pycache__" && d.name !== "node_modules")
    .flatMap((d) => (d.isDirectory() ? walk(path.join(dir, d.name)) : [path.join(dir, d.name)]))
    .sort()

/**
 * The non-TypeScript files a module's folder holds for it at run time: its own,
 * and those of subfolders without TypeScript (a Python package such as
 * plugins/train/torch/tunegraph_torch). Folders with TypeScript of their own
 * count only through the modules the graph reaches there.
 */
const runtimeFiles = (dir) => {
  const out = []
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name)
    if (d.isFile() && RUNTIME_FILES.test(d.name)) out.push(p)
    else if (d.isDirectory() && d.name !== "__pycache__") {
      const inner = walk(p)
      if (!inner.some((f) => f.endsWith(".ts"))) out.push(...inner.filter((f) => RUNTIME_FILES.test(f)))
    }
  }
  return out.sort()
}

const packageOf = (spec) => {
  if (spec.startsWith("node:") || spec.startsWith(".") || path.isAbsolute(spec)) return undefined
  const parts = spec.split("/")
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]
}

const sha = (data) => createHash("sha256").update(data).digest("hex")

/** The local modules (relative to root) and npm packages the entries import, transitively. */
const graph = async (root, entries) => {
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: entries,
    bundle: true,
    write: false,
    outdir: path.join(root, ".fingerprint-out"),
    metafile: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    logLevel: "silent",
  })
  const modules = Object.keys(result.metafile.inputs).filter((p) => !p.includes("node_modules"))
  const packages = new Set()
  for (const input of Object.values(result.metafile.inputs))
    for (const i of input.imports) {
      const name = i.external ? packageOf(i.path) : undefined
      if (name !== undefined && !ENGINE_PACKAGES.test(name) && !builtin(name)) packages.add(name)
    }
  return { modules, packages }
}

const builtins = new Set((await import("node:module")).builtinModules)
const builtin = (name) => builtins.has(name)

const minified = new Map()
const moduleDigest = async (root, rel) => {
  const abs = path.join(root, rel)
  const source = fs.readFileSync(abs, "utf8")
  const key = `${rel}\0${sha(source)}`
  if (!minified.has(key)) {
    const out = await esbuild.transform(source, {
      loader: rel.endsWith(".ts") ? "ts" : "js",
      format: "esm",
      minify: true,
      legalComments: "none",
      target: "node20",
    })
    minified.set(key, sha(out.code))
  }
  return minified.get(key)
}

/** plugins/<folder> -> { hash, packages } for every plugin folder with an index.ts. */
export const pluginCode = async (root) => {
  const out = {}
  for (const d of fs.readdirSync(path.join(root, "plugins"), { withFileTypes: true })) {
    if (!d.isDirectory() || !fs.existsSync(path.join(root, "plugins", d.name, "index.ts"))) continue
    const entries = new Set([`plugins/${d.name}/index.ts`])
    let g
    for (;;) {
      g = await graph(root, [...entries])
      const before = entries.size
      for (const dir of new Set(g.modules.map((m) => path.dirname(m))))
        for (const f of fs.readdirSync(path.join(root, dir)))
          if (/Worker\.ts$/.test(f)) entries.add(`${dir}/${f}`)
      if (entries.size === before) break
    }
    const h = createHash("sha256")
    for (const m of [...g.modules].sort()) h.update(`${m}\0${await moduleDigest(root, m)}\0`)
    const dirs = [...new Set(g.modules.map((m) => path.dirname(m)))].sort()
    const files = new Set()
    for (const dir of dirs)
      for (const f of runtimeFiles(path.join(root, dir))) files.add(path.relative(root, f))
    for (const f of [...files].sort()) h.update(`${f}\0${sha(fs.readFileSync(path.join(root, f)))}\0`)
    out[`plugins/${d.name}`] = { hash: h.digest("hex").slice(0, 16), packages: [...g.packages].sort() }
  }
  return out
}
