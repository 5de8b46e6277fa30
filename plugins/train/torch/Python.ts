/**
 * Where the torch backend's Python lives: the interpreter (`TUNEGRAPH_PYTHON`,
 * default `python3`; a virtual environment's python works) and the worker
 * script that ships in the package beside this module's source.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const pythonCommand = (): string => {
  const p = process.env.TUNEGRAPH_PYTHON
  return p === undefined || p === "" ? "python3" : p
}

const here = path.dirname(fileURLToPath(import.meta.url))

/** The package's plugins/train/torch folder, from this module's source or from a bundle in dist/. */
export const torchDir = (): string => {
  for (let dir = here; ; dir = path.dirname(dir)) {
    for (const candidate of [dir, path.join(dir, "plugins", "train", "torch")])
      if (fs.existsSync(path.join(candidate, "worker.py"))) return candidate
    if (path.dirname(dir) === dir) break
  }
  throw new Error("the torch backend's worker (plugins/train/torch/worker.py) is missing from the package")
}

export const workerPath = (): string => path.join(torchDir(), "worker.py")
export const requirementsPath = (): string => path.join(torchDir(), "requirements.txt")
