/**
 * The device a tfjs backend reports, and the `backends` table built from a
 * survey. tfjs-node-gpu cannot be installed here (its install downloads
 * libtensorflow), so its backend object is faked with the two fields
 * tfjs-node's NodeJSKernelBackend sets when it starts: isGPUPackage and
 * isUsingGpuDevice.
 */
import { describe, expect, it } from "vitest"
import { backendDevice, deviceOf, initBackend, NO_USABLE_GPU } from "../../../plugins/train/Backend.ts"
import { allBackends, type ResolvedBackend } from "../../../plugins/train/BackendChoice.ts"
import { backendRows, formatRows, type Survey } from "../../../plugins/train/BackendsCommand.ts"
import type { TorchProbe } from "../../../plugins/train/torch/Probe.ts"

const nodeBackend = (isUsingGpuDevice: boolean) => ({ isGPUPackage: true, isUsingGpuDevice })

describe("the device a tfjs backend computes on", () => {
  it("tfjs-node-gpu without a usable GPU says it computes on the CPU", () => {
    expect(deviceOf("tfjs-node-gpu", nodeBackend(false))).toBe(NO_USABLE_GPU)
    expect(NO_USABLE_GPU).toBe("cpu (TensorFlow found no usable GPU)")
    expect(deviceOf("tfjs-node-gpu", nodeBackend(true))).toBe("cuda")
    // A backend object without the field is not taken for either.
    expect(deviceOf("tfjs-node-gpu", {})).toMatch(/^unknown/)
    expect(deviceOf("tfjs-node-gpu", undefined)).toMatch(/^unknown/)
    for (const b of ["tfjs-node", "wasm", "cpu"] as const) expect(deviceOf(b, nodeBackend(false))).toBe("cpu")
  })

  it("initBackend records the device of the backend it initialised", async () => {
    await initBackend("cpu")
    expect(backendDevice()).toBe("cpu")
  })
})

const tfjsResolved = (name: "tfjs-node-gpu" | "wasm" | "cpu", device = "cpu"): ResolvedBackend => ({
  name,
  family: "tfjs",
  device,
  environment: { backend: name, device },
})

const cpuOnlyTorch: TorchProbe = {
  available: true,
  pythonVersion: "3.11.7",
  packages: { torch: "2.13.0+cpu", transformers: "5.24.0", peft: "0.21.2" },
  cuda: null,
  cudaAvailable: false,
  cudaReason: "this torch is a CPU build",
  devices: [],
}

/** A machine with tfjs-node-gpu installed and a driver, torch without CUDA. */
const survey = (nodeGpu: Survey["nodeGpu"], auto: Survey["auto"] = { name: "torch-cpu" }): Survey => ({
  entries: [
    { name: "torch-cuda", reason: "no CUDA device for torch (this torch is a CPU build)" },
    {
      name: "torch-cpu",
      resolved: { name: "torch-cpu", family: "torch", device: "cpu", environment: {}, probe: cpuOnlyTorch },
    },
    { name: "tfjs-node-gpu", resolved: tfjsResolved("tfjs-node-gpu", "cuda") },
    { name: "tfjs-node", reason: "@tensorflow/tfjs-node is not installed" },
    { name: "wasm", resolved: tfjsResolved("wasm") },
    { name: "cpu", resolved: tfjsResolved("cpu") },
  ],
  probe: cpuOnlyTorch,
  auto,
  npmVersions: {
    "@tensorflow/tfjs-core": "4.22.0",
    "@tensorflow/tfjs-node-gpu": "4.22.0",
    "@tensorflow/tfjs-backend-wasm": "4.22.0",
    "@tensorflow/tfjs-backend-cpu": "4.22.0",
  },
  ...(nodeGpu === undefined ? {} : { nodeGpu }),
})

const row = (rows: ReturnType<typeof backendRows>, name: string) => rows.find((r) => r.backend === name)!

describe("the backends table", () => {
  it("says when tfjs-node-gpu loaded but TensorFlow found no usable GPU", () => {
    const rows = backendRows(survey({ device: deviceOf("tfjs-node-gpu", nodeBackend(false)) }))
    expect(row(rows, "tfjs-node-gpu")).toMatchObject({
      available: true,
      device: "cpu (TensorFlow found no usable GPU)",
      versions: { "@tensorflow/tfjs-core": "4.22.0", "@tensorflow/tfjs-node-gpu": "4.22.0" },
    })
    expect(formatRows(rows, undefined)).toMatch(
      /tfjs-node-gpu +available +cpu \(TensorFlow found no usable GPU\)/,
    )
    expect(row(backendRows(survey({ device: "cuda" })), "tfjs-node-gpu").device).toBe("cuda")
  })

  it("a tfjs-node-gpu that does not load is unavailable, with TensorFlow's error", () => {
    const rows = backendRows(survey({ error: "libcudart.so.11.0: cannot open shared object file" }))
    expect(row(rows, "tfjs-node-gpu")).toMatchObject({ available: false, device: null })
    expect(row(rows, "tfjs-node-gpu").reason).toContain("libcudart.so.11.0")
  })

  it("marks auto's pick and the first available, and gives versions and reasons", () => {
    const rows = backendRows(survey({ device: "cuda" }, { name: "wasm" }))
    expect(rows.map((r) => r.backend)).toEqual(allBackends().map((b) => b.name))
    expect(rows.filter((r) => r.auto).map((r) => r.backend)).toEqual(["wasm"])
    expect(rows.filter((r) => r.firstAvailable).map((r) => r.backend)).toEqual(["torch-cpu"])
    expect(row(rows, "torch-cuda")).toMatchObject({
      available: false,
      reason: "no CUDA device for torch (this torch is a CPU build)",
      versions: { torch: "2.13.0+cpu", transformers: "5.24.0", peft: "0.21.2", cuda: "none" },
    })
    expect(row(rows, "tfjs-node").versions).toEqual({})
    const text = formatRows(rows, "wasm")
    expect(text).toContain("* auto picks wasm: TUNEGRAPH_BACKEND=wasm (without it: torch-cpu)")
    expect(text).toMatch(/^\* wasm /m)
    const failed = backendRows(survey({ device: "cuda" }, { error: "backend torch-cuda is not available" }))
    expect(failed.some((r) => r.auto)).toBe(false)
    expect(formatRows(failed, "torch-cuda", "backend torch-cuda is not available")).toContain(
      "auto picks nothing: TUNEGRAPH_BACKEND=torch-cuda: backend torch-cuda is not available",
    )
  })

  it("lists each CUDA device with its memory", () => {
    const probe: TorchProbe = {
      ...cpuOnlyTorch,
      packages: { torch: "2.13.0+cu128", transformers: "5.24.0", peft: "0.21.2" },
      cuda: "12.8",
      cudaAvailable: true,
      devices: [{ name: "NVIDIA H200", memory: 150_000_000_000, capability: "9.0" }],
    }
    const s = survey(undefined, { name: "torch-cuda" })
    const rows = backendRows({
      ...s,
      probe,
      entries: [
        {
          name: "torch-cuda",
          resolved: { name: "torch-cuda", family: "torch", device: "NVIDIA H200", environment: {}, probe },
        },
        ...s.entries.slice(1),
      ],
    })
    expect(row(rows, "torch-cuda")).toMatchObject({
      available: true,
      auto: true,
      gpus: [{ name: "NVIDIA H200", memory: 150_000_000_000 }],
      versions: { torch: "2.13.0+cu128", cuda: "12.8" },
    })
    expect(formatRows(rows, undefined)).toContain("NVIDIA H200 (139.7 GiB, sm 9.0)")
  })
})
