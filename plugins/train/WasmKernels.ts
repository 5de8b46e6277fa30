/**
 * Kernels the WebAssembly backend lacks, registered in JavaScript over its
 * heap. UnsortedSegmentSum is the gradient of `gather`, so of the embedding.
 */
import * as tf from "@tensorflow/tfjs-core"

interface WasmBackend {
  readSync(dataId: unknown): tf.TypedArray
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo
  typedArrayFromHeap(info: tf.TensorInfo): tf.TypedArray
}

let registered = false

export const registerWasmKernels = (): void => {
  if (registered) return
  registered = true
  if (tf.getKernel("UnsortedSegmentSum", "wasm") === undefined)
    tf.registerKernel({
      kernelName: "UnsortedSegmentSum",
      backendName: "wasm",
      kernelFunc: ({ inputs, attrs, backend }) => {
        const b = backend as unknown as WasmBackend
        const x = inputs.x as tf.TensorInfo
        const ids = inputs.segmentIds as tf.TensorInfo
        const n = (attrs as { numSegments: number }).numSegments
        const rows = ids.shape[0] as number
        const width = x.shape.slice(1).reduce((a, c) => a * c, 1)
        const xs = b.readSync(x.dataId) as Float32Array
        const seg = b.readSync(ids.dataId)
        const out = b.makeOutput([n, ...x.shape.slice(1)], x.dtype)
        const o = b.typedArrayFromHeap(out) as Float32Array
        o.fill(0)
        for (let r = 0; r < rows; r++) {
          const s = seg[r] as number
          if (s < 0 || s >= n) continue
          const src = r * width
          const dst = s * width
          for (let j = 0; j < width; j++) o[dst + j] = (o[dst + j] as number) + (xs[src + j] as number)
        }
        return out
      },
    })
}
