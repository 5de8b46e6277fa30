// Bundles the library and the CLI into dist/ with esbuild: Effect is bundled and
// tree-shaken (a no-op run must start fast); native and heavy packages stay
// external and load only when a step needs them. Each plugin folder's code
// fingerprint (scripts/fingerprints.mjs: the modules it really imports) and the
// npm packages it loads are compiled in.
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as esbuild from "esbuild"
import { pluginCode } from "./fingerprints.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
const bundled = new Set(["effect", "@effect/platform-node"])
const external = [
  ...Object.keys(pkg.dependencies ?? {}),
  ...Object.keys(pkg.optionalDependencies ?? {}),
].filter((d) => !bundled.has(d))

// Python's bytecode caches (__pycache__) are made at run time: they are not code.
const walk = (dir) =>
  fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.name !== "__pycache__")
    .flatMap((d) => (d.isDirectory() ? walk(path.join(dir, d.name)) : [path.join(dir, d.name)]))
    .sort()

// plugins/<folder> -> the fingerprint of the modules its index.ts really imports, and the npm packages among them
const code = await pluginCode(root)
const codeHashes = Object.fromEntries(Object.entries(code).map(([k, v]) => [k, v.hash]))
const codePackages = Object.fromEntries(Object.entries(code).map(([k, v]) => [k, v.packages]))

// Worker entries (files named *Worker.ts) are emitted beside the chunks that start them.
const workers = walk(path.join(root, "plugins")).filter((f) => /Worker\.ts$/.test(f))

fs.rmSync(path.join(root, "dist"), { recursive: true, force: true })
await esbuild.build({
  absWorkingDir: root,
  entryPoints: [
    { in: "index.ts", out: "index" },
    { in: "cli.ts", out: "cli" },
    { in: "effect.ts", out: "effect" },
    ...workers.map((w) => ({ in: path.relative(root, w), out: `chunks/${path.basename(w, ".ts")}` })),
  ],
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external,
  plugins: [
    {
      // Node's ESM loader needs the extension on deep imports into CommonJS-era packages
      // (`@tensorflow/tfjs-core/dist/register_all_gradients`): add it where the file exists.
      name: "deep-import-extensions",
      setup(build) {
        // tfjs-core's ESM files import without extensions, which Node refuses: bundle such deep
        // imports (gradient registrations). tfjs keeps its engine and registries in a global, so
        // this copy registers into the same engine as the package's own entry.
        build.onResolve({ filter: /^@tensorflow\/tfjs-core\/dist\// }, (args) => ({
          path: path.join(root, "node_modules", /\.js$/.test(args.path) ? args.path : `${args.path}.js`),
        }))
        build.onResolve({ filter: /^(@[^/]+\/)?[^./][^/]*\/.+/ }, (args) => {
          if (/\.[cm]?js$/.test(args.path)) return undefined
          const file = path.join(root, "node_modules", `${args.path}.js`)
          return fs.existsSync(file) ? { path: `${args.path}.js`, external: true } : undefined
        })
      },
    },
  ],
  minify: true,
  sourcemap: "linked",
  chunkNames: "chunks/[name]-[hash]",
  define: {
    __TUNEGRAPH_CODE_HASHES__: JSON.stringify(codeHashes),
    __TUNEGRAPH_CODE_PACKAGES__: JSON.stringify(codePackages),
  },
  banner: {
    js: "import { createRequire as __tgCreateRequire } from 'node:module'; const require = __tgCreateRequire(import.meta.url);",
  },
  logLevel: "warning",
})
console.log(`built dist/ (${workers.length} worker${workers.length === 1 ? "" : "s"})`)
