/** Resource slots for a run: --cpus/--gpus, else TUNEGRAPH_CPUS/TUNEGRAPH_GPUS, else what the machine has. */
import * as fs from "node:fs"
import * as os from "node:os"

export const defaultCpus = (): number => {
  const env = Number(process.env.TUNEGRAPH_CPUS)
  return Number.isInteger(env) && env > 0 ? env : os.availableParallelism()
}

/** GPU slots: TUNEGRAPH_GPUS, else the NVIDIA devices the driver lists (0 without one: GPU steps then share CPU slots). */
export const defaultGpus = (): number => {
  const env = Number(process.env.TUNEGRAPH_GPUS)
  if (
    process.env.TUNEGRAPH_GPUS !== undefined &&
    process.env.TUNEGRAPH_GPUS !== "" &&
    Number.isInteger(env) &&
    env >= 0
  )
    return env
  try {
    return fs.readdirSync("/proc/driver/nvidia/gpus").length
  } catch {
    return 0
  }
}
