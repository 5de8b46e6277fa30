/**
 * Loads a pipeline file written in TypeScript, with no build step of the
 * user's. The file and its local imports are bundled by esbuild into one ES
 * module kept under the store; `tunegraph` resolves to the running engine
 * (one instance of every plugin and kind), other packages to their absolute
 * paths. A later load whose inputs have the same size and mtime reuses the
 * module without starting esbuild.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { setFunctionFingerprint } from "./Canonical.ts"
import { functionFingerprint, topLevelDeclarations } from "./FunctionDeps.ts"
import { Pipeline } from "./Pipeline.ts"

export class LoadError extends Error {
  override readonly name = "LoadError"
}

export interface Loaded {
  readonly pipeline: Pipeline
  /** The pipeline file and every local file it imports (what `watch` watches). */
  readonly inputs: ReadonlyArray<string>
}

interface Manifest {
  readonly engine: string
  readonly inputs: ReadonlyArray<{ path: string; size: number; mtimeMs: number }>
}

/** The URL of the module that exports the engine's public API, to which `tunegraph` imports resolve. */
let engineUrl: string | undefined
export const setEngineUrl = (url: string) => {
  engineUrl = url
}

export const loadPipeline = async (file: string, cacheDir: string): Promise<Loaded> => {
  const abs = path.resolve(file)
  if (!fs.existsSync(abs)) throw new LoadError(`pipeline file ${file} does not exist`)
  const engine = engineUrl ?? "tunegraph"
  const id = createHash("sha256").update(`${abs}\0${engine}`).digest("hex").slice(0, 16)
  const out = path.join(cacheDir, `${id}.mjs`)
  const manifestFile = path.join(cacheDir, `${id}.json`)
  let manifest = readManifest(manifestFile, engine)
  if (manifest === undefined) manifest = await compile(abs, out, manifestFile, engine)
  const version = createHash("sha256").update(JSON.stringify(manifest.inputs)).digest("hex").slice(0, 12)
  let mod: Record<string, unknown>
  try {
    mod = (await import(`${pathToFileURL(out).href}?v=${version}`)) as Record<string, unknown>
  } catch (e) {
    throw new LoadError(`${file}: ${(e as Error).stack ?? String(e)}`)
  }
  const pipeline = mod.default ?? mod.pipeline
  if (!(pipeline instanceof Pipeline) && !isPipelineLike(pipeline))
    throw new LoadError(`${file} must \`export default\` a Pipeline (Pipeline.make(...))`)
  registerFunctions(pipeline as Pipeline, out)
  return { pipeline: pipeline as Pipeline, inputs: manifest.inputs.map((i) => i.path) }
}

/** Keys every function given as a parameter by its source and the top-level declarations it uses. */
const registerFunctions = (pipeline: Pipeline, bundle: string) => {
  let declarations: Map<string, string> | undefined
  const visit = (v: unknown, depth: number) => {
    if (depth > 8 || v === null) return
    if (typeof v === "function") {
      declarations ??= topLevelDeclarations(fs.readFileSync(bundle, "utf8"))
      setFunctionFingerprint(v, functionFingerprint(v, declarations))
    } else if (Array.isArray(v)) for (const x of v) visit(x, depth + 1)
    else if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype)
      for (const x of Object.values(v)) visit(x, depth + 1)
  }
  for (const node of pipeline.nodes.values()) if (node._tag === "Step") visit(node.params, 0)
}

const isPipelineLike = (v: unknown): boolean =>
  typeof v === "object" && v !== null && (v as { nodes?: unknown }).nodes instanceof Map

const readManifest = (file: string, engine: string): Manifest | undefined => {
  try {
    const m = JSON.parse(fs.readFileSync(file, "utf8")) as Manifest
    if (m.engine !== engine) return undefined
    for (const i of m.inputs) {
      const st = fs.statSync(i.path)
      if (st.size !== i.size || st.mtimeMs !== i.mtimeMs) return undefined
    }
    return m
  } catch {
    return undefined
  }
}

const compile = async (abs: string, out: string, manifestFile: string, engine: string): Promise<Manifest> => {
  const esbuild = await import("esbuild")
  let result: Awaited<ReturnType<typeof esbuild.build>>
  try {
    result = await esbuild.build({
      entryPoints: [abs],
      bundle: true,
      write: false,
      format: "esm",
      platform: "node",
      target: "node20",
      metafile: true,
      logLevel: "silent",
      sourcemap: "inline",
      plugins: [
        {
          name: "tunegraph-externals",
          setup(build) {
            build.onResolve({ filter: /^tunegraph$/ }, () => ({ path: engine, external: true }))
            // One Effect runtime: a plugin written in a pipeline file runs on the engine's own copy.
            if (engine.startsWith("file:"))
              build.onResolve({ filter: /^effect$/ }, () => ({
                path: new URL("./effect.js", engine).href,
                external: true,
              }))
            build.onResolve({ filter: /^[^./]/ }, async (args) => {
              if (args.path.startsWith("node:") || args.pluginData === "inner") return undefined
              const r = await build.resolve(args.path, {
                resolveDir: args.resolveDir,
                kind: args.kind,
                pluginData: "inner",
              })
              if (r.errors.length > 0) return { errors: r.errors }
              return { path: r.external ? args.path : pathToFileURL(r.path).href, external: true }
            })
          },
        },
      ],
    })
  } catch (e) {
    const errs = (
      e as { errors?: Array<{ text: string; location?: { file: string; line: number; column: number } }> }
    ).errors
    if (errs !== undefined && errs.length > 0)
      throw new LoadError(
        errs
          .map((er) =>
            er.location
              ? `${er.location.file}:${er.location.line}:${er.location.column}: ${er.text}`
              : er.text,
          )
          .join("\n"),
      )
    throw new LoadError(String(e))
  }
  const inputs = Object.keys(result.metafile!.inputs)
    .map((p) => path.resolve(p))
    .filter((p) => fs.existsSync(p))
    .map((p) => {
      const st = fs.statSync(p)
      return { path: p, size: st.size, mtimeMs: st.mtimeMs }
    })
  fs.mkdirSync(path.dirname(out), { recursive: true })
  const tmp = `${out}.${process.pid}.tmp`
  fs.writeFileSync(tmp, result.outputFiles![0]!.contents)
  fs.renameSync(tmp, out)
  const manifest: Manifest = { engine, inputs }
  fs.writeFileSync(`${manifestFile}.${process.pid}.tmp`, JSON.stringify(manifest))
  fs.renameSync(`${manifestFile}.${process.pid}.tmp`, manifestFile)
  return manifest
}
