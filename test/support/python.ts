/**
 * The Python side of the tests: the interpreter with the pinned torch
 * requirements (plugins/train/torch/requirements.txt). Where it is missing a
 * suite is skipped, saying why; under CI=true that is a failure instead,
 * since .ci/run installs them.
 */
import { spawnSync } from "node:child_process"
import { pythonCommand } from "../../plugins/train/torch/Python.ts"

export const python = pythonCommand()

const probe = spawnSync(
  python,
  ["-c", "import torch, transformers, peft, safetensors; print(torch.__version__)"],
  {
    encoding: "utf8",
    timeout: 120_000,
  },
)
export const hasTorch = probe.status === 0
export const torchMissing = hasTorch
  ? ""
  : `${python} cannot import torch, transformers and peft (${(probe.stderr ?? probe.error?.message ?? "").trim().split("\n").pop()}): pip install -r plugins/train/torch/requirements.txt`

if (!hasTorch) {
  if (process.env.CI === "true") throw new Error(`CI=true and ${torchMissing}`)
  process.stderr.write(`skipping the torch suites: ${torchMissing}\n`)
}

/** Runs a Python snippet or script with arguments; throws with its stderr when it fails. */
export const runPython = (args: ReadonlyArray<string>, input?: string): string => {
  const r = spawnSync(python, args, {
    encoding: "utf8",
    input,
    maxBuffer: 1 << 30,
    timeout: 600_000,
    env: {
      ...process.env,
      TRANSFORMERS_VERBOSITY: "error",
      HF_HUB_OFFLINE: "1",
      TOKENIZERS_PARALLELISM: "false",
    },
  })
  if (r.status !== 0) throw new Error(`${python} ${args.join(" ")} failed (${r.status}):\n${r.stderr}`)
  return r.stdout
}
