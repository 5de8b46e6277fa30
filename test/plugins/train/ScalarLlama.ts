/**
 * An independent scalar Llama forward pass straight from llama2.c's layout
 * (interleaved RoPE pairs, no weight permutation, float64 arithmetic), used
 * only to check the TensorFlow.js model. It shares no code with plugins/train.
 */
import * as fs from "node:fs"

export interface ScalarModel {
  dim: number
  hidden: number
  layers: number
  heads: number
  kvHeads: number
  vocab: number
  seqLen: number
  emb: Float32Array
  rmsAtt: Float32Array[]
  wq: Float32Array[]
  wk: Float32Array[]
  wv: Float32Array[]
  wo: Float32Array[]
  rmsFfn: Float32Array[]
  w1: Float32Array[]
  w2: Float32Array[]
  w3: Float32Array[]
  rmsFinal: Float32Array
  wcls: Float32Array
}

export const readScalarModel = (file: string): ScalarModel => {
  const b = fs.readFileSync(file)
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true))
  const [dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen] = h as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const vocab = Math.abs(vocabSigned)
  const kvDim = (dim / heads) * kvHeads
  let at = 28
  const take = (n: number) => {
    const out = new Float32Array(n)
    for (let i = 0; i < n; i++, at += 4) out[i] = dv.getFloat32(at, true)
    return out
  }
  const per = (n: number) => Array.from({ length: layers }, () => take(n))
  const emb = take(vocab * dim)
  const m = {
    rmsAtt: per(dim),
    wq: per(dim * dim),
    wk: per(kvDim * dim),
    wv: per(kvDim * dim),
    wo: per(dim * dim),
    rmsFfn: per(dim),
    w1: per(hidden * dim),
    w2: per(dim * hidden),
    w3: per(hidden * dim),
  }
  const rmsFinal = take(dim)
  at += seqLen * (dim / heads) * 4
  const wcls = vocabSigned > 0 ? emb : take(vocab * dim)
  return { dim, hidden, layers, heads, kvHeads, vocab, seqLen, emb, ...m, rmsFinal, wcls }
}

const rmsnorm = (x: Float64Array, w: Float32Array) => {
  let ss = 0
  for (const v of x) ss += v * v
  const s = 1 / Math.sqrt(ss / x.length + 1e-5)
  return x.map((v, i) => v * s * (w[i] as number))
}

const matvec = (w: Float32Array, x: Float64Array, rows: number) => {
  const cols = x.length
  const out = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    let s = 0
    for (let c = 0; c < cols; c++) s += (w[r * cols + c] as number) * (x[c] as number)
    out[r] = s
  }
  return out
}

/** Runs token `token` at position `pos` with a key/value cache; returns the logits. */
export class ScalarRunner {
  readonly kc: Float64Array[][] = []
  readonly vc: Float64Array[][] = []
  constructor(readonly m: ScalarModel) {
    for (let l = 0; l < m.layers; l++) {
      this.kc.push([])
      this.vc.push([])
    }
  }

  forward(token: number, pos: number): Float64Array {
    const m = this.m
    const hs = m.dim / m.heads
    const kvDim = hs * m.kvHeads
    let x = Float64Array.from(m.emb.subarray(token * m.dim, (token + 1) * m.dim))
    for (let l = 0; l < m.layers; l++) {
      const xb = rmsnorm(x, m.rmsAtt[l] as Float32Array)
      const q = matvec(m.wq[l] as Float32Array, xb, m.dim)
      const k = matvec(m.wk[l] as Float32Array, xb, kvDim)
      const v = matvec(m.wv[l] as Float32Array, xb, kvDim)
      for (let i = 0; i < m.dim; i += 2) {
        const hd = i % hs
        const freq = 1 / 10000 ** (hd / hs)
        const fcr = Math.cos(pos * freq)
        const fci = Math.sin(pos * freq)
        for (const vec of i < kvDim ? [q, k] : [q]) {
          const v0 = vec[i] as number
          const v1 = vec[i + 1] as number
          vec[i] = v0 * fcr - v1 * fci
          vec[i + 1] = v0 * fci + v1 * fcr
        }
      }
      ;(this.kc[l] as Float64Array[])[pos] = k
      ;(this.vc[l] as Float64Array[])[pos] = v
      const att = new Float64Array(m.dim)
      const rep = m.heads / m.kvHeads
      for (let h = 0; h < m.heads; h++) {
        const kvh = Math.floor(h / rep)
        const scores = new Float64Array(pos + 1)
        for (let t = 0; t <= pos; t++) {
          const kt = (this.kc[l] as Float64Array[])[t] as Float64Array
          let s = 0
          for (let i = 0; i < hs; i++) s += (q[h * hs + i] as number) * (kt[kvh * hs + i] as number)
          scores[t] = s / Math.sqrt(hs)
        }
        const mx = Math.max(...scores)
        let sum = 0
        for (let t = 0; t <= pos; t++) {
          scores[t] = Math.exp((scores[t] as number) - mx)
          sum += scores[t] as number
        }
        for (let t = 0; t <= pos; t++) {
          const vt = (this.vc[l] as Float64Array[])[t] as Float64Array
          const a = (scores[t] as number) / sum
          for (let i = 0; i < hs; i++)
            att[h * hs + i] = (att[h * hs + i] as number) + a * (vt[kvh * hs + i] as number)
        }
      }
      const o = matvec(m.wo[l] as Float32Array, att, m.dim)
      x = x.map((v, i) => v + (o[i] as number))
      const xf = rmsnorm(x, m.rmsFfn[l] as Float32Array)
      const h1 = matvec(m.w1[l] as Float32Array, xf, m.hidden)
      const h3 = matvec(m.w3[l] as Float32Array, xf, m.hidden)
      const g = h1.map((a, i) => (a / (1 + Math.exp(-a))) * (h3[i] as number))
      const d = matvec(m.w2[l] as Float32Array, g, m.dim)
      x = x.map((v, i) => v + (d[i] as number))
    }
    return matvec(m.wcls, rmsnorm(x, m.rmsFinal), m.vocab)
  }
}

/** llama2.c's greedy loop: start at BOS, stop at BOS or after `steps` positions. */
export const scalarGreedy = (m: ScalarModel, steps: number): number[] => {
  const r = new ScalarRunner(m)
  const out: number[] = []
  let token = 1
  for (let pos = 0; pos < steps; pos++) {
    const logits = r.forward(token, pos)
    let best = 0
    for (let i = 1; i < logits.length; i++) if ((logits[i] as number) > (logits[best] as number)) best = i
    if (best === 1) break
    out.push(best)
    token = best
  }
  return out
}

/** Decodes like run.c: strip the leading space after BOS, bytes for <0xNN>, skip unprintable single bytes. */
export const llama2cText = (tokFile: string, ids: number[]): string => {
  const b = fs.readFileSync(tokFile)
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const pieces: Buffer[] = []
  let at = 4
  while (at < b.length) {
    const len = dv.getInt32(at + 4, true)
    pieces.push(b.subarray(at + 8, at + 8 + len))
    at += 8 + len
  }
  const out: Buffer[] = []
  let prev = 1
  for (const id of ids) {
    let p = pieces[id] as Buffer
    if (prev === 1 && p[0] === 0x20) p = p.subarray(1)
    const m = /^<0x([0-9A-F]{2})>$/.exec(p.toString("latin1"))
    if (m) p = Buffer.from([Number.parseInt(m[1] as string, 16)])
    const skip =
      p.length === 1 &&
      !((p[0] as number) >= 0x20 && (p[0] as number) < 0x7f) &&
      !/\s/.test(String.fromCharCode(p[0] as number))
    if (!skip) out.push(p)
    prev = id
  }
  return `${Buffer.concat(out).toString("latin1")}`
}
