/**
 * Gradients of the built-in ops that sit between our custom ones (reshape,
 * transpose, add, subtract, multiply, divide, softmax). tfjs-core alone
 * registers no gradients, and its own set ships only as extension-less ES
 * modules that Node cannot import; these few are all the model needs.
 * Kernels that already have a gradient keep it.
 */
import * as tf from "@tensorflow/tfjs-core"

type T = tf.Tensor

/** Sums `dy` over the axes along which `shape` was broadcast, back to `shape`. */
const unbroadcast = (dy: T, shape: number[]): T => {
  const axes = tf.backend_util.getReductionAxes(shape, dy.shape)
  return tf.reshape(axes.length > 0 ? tf.sum(dy, axes) : dy, shape)
}

const configs: tf.GradConfig[] = [
  {
    kernelName: tf.Reshape,
    inputsToSave: ["x"],
    gradFunc: (dy, [x]) => ({ x: () => tf.reshape(dy as T, (x as T).shape) }),
  },
  {
    kernelName: tf.Transpose,
    gradFunc: (dy, _saved, attrs) => {
      const perm = (attrs as unknown as { perm: number[] }).perm
      const inverse = new Array<number>(perm.length)
      perm.forEach((p, i) => {
        inverse[p] = i
      })
      return { x: () => tf.transpose(dy as T, inverse) }
    },
  },
  {
    kernelName: tf.Add,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(dy as T, (a as T).shape),
      b: () => unbroadcast(dy as T, (b as T).shape),
    }),
  },
  {
    kernelName: tf.Sub,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(dy as T, (a as T).shape),
      b: () => tf.neg(unbroadcast(dy as T, (b as T).shape)),
    }),
  },
  {
    kernelName: tf.Multiply,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.mul(dy as T, b as T), (a as T).shape),
      b: () => unbroadcast(tf.mul(dy as T, a as T), (b as T).shape),
    }),
  },
  {
    kernelName: tf.RealDiv,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.div(dy as T, b as T), (a as T).shape),
      b: () => unbroadcast(tf.neg(tf.div(tf.mul(dy as T, a as T), tf.square(b as T))), (b as T).shape),
    }),
  },
  {
    kernelName: tf.Softmax,
    outputsToSave: [true],
    gradFunc: (dy, [y], attrs) => {
      const dim = (attrs as unknown as { dim: number }).dim
      return { logits: () => tf.mul(y as T, tf.sub(dy as T, tf.sum(tf.mul(dy as T, y as T), dim, true))) }
    },
  },
]

let registered = false

export const registerGradients = (): void => {
  if (registered) return
  registered = true
  for (const c of configs) if (tf.getGradient(c.kernelName) === undefined) tf.registerGradient(c)
}
