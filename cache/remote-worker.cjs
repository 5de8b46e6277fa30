// The worker thread behind cache/Remote.ts: it owns the PostgreSQL connection and the S3
// client of a shared store and answers one request at a time. The caller blocks on a shared
// flag until the answer is posted (Atomics), which keeps the store's interface synchronous,
// as better-sqlite3's is for the embedded store. Plain CommonJS so it loads unbundled, from
// the sources as from an installed package.
"use strict"
const { workerData } = require("node:worker_threads")
const fs = require("node:fs")

const { port, flag } = workerData
const signal = new Int32Array(flag)

let pg
let client
let s3
let s3Options
let bucket

const client3 = () => {
  if (s3 !== undefined) return s3
  // The pinned SDK runs on Node 20 (the engines tunegraph supports); its notice of later versions is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true"
  const { S3Client } = require("@aws-sdk/client-s3")
  s3 = new S3Client({
    region: s3Options.region,
    endpoint: s3Options.endpoint,
    forcePathStyle: s3Options.forcePathStyle,
    // retries with backoff for a throttled or briefly unreachable endpoint
    maxAttempts: 5,
  })
  return s3
}

const pgTypes = () => {
  const types = require("pg").types
  // bigint (count(*), BIGSERIAL, BIGINT times in ms) and numeric as JavaScript numbers:
  // every such value the store keeps is below 2^53.
  types.setTypeParser(20, (v) => Number(v))
  types.setTypeParser(1700, (v) => Number(v))
}

const ops = {
  async connect(url) {
    pg = require("pg")
    pgTypes()
    client = new pg.Client({ connectionString: url, application_name: "tunegraph" })
    client.on("error", () => {
      // a dropped connection shows up as the next query's error
    })
    await client.connect()
    return null
  },
  async query(text, params, rowMode) {
    const r = await client.query({ text, values: params, rowMode: rowMode === "array" ? "array" : undefined })
    if (Array.isArray(r)) throw new Error("cannot insert multiple commands into one statement")
    return { rows: r.rows, rowCount: r.rowCount ?? 0, fields: (r.fields ?? []).map((f) => f.name) }
  },
  /** Several statements in one round trip to the worker (a transaction's inserts). */
  async batch(statements) {
    const out = []
    try {
      for (const s of statements) {
        const r = await client.query({ text: s.text, values: s.params })
        out.push({ rows: r.rows, rowCount: r.rowCount ?? 0 })
      }
    } catch (e) {
      // the batch is one transaction: none of it stays
      await client.query("ROLLBACK").catch(() => {})
      throw e
    }
    return out
  },
  /** The bucket's settings; the SDK loads at the first request (a no-op run makes none). */
  async s3Init(options) {
    s3Options = options
    bucket = options.bucket
    return null
  },
  /** Uploads files (key, local path), `concurrency` at a time; large ones in parallel parts. */
  async s3Put(items, concurrency) {
    const { Upload } = require("@aws-sdk/lib-storage")
    await pool(items, concurrency, async (it) => {
      const size = fs.statSync(it.file).size
      const upload = new Upload({
        client: client3(),
        params: { Bucket: bucket, Key: it.key, Body: fs.createReadStream(it.file), ContentLength: size },
        partSize: 64 * 1024 * 1024,
        queueSize: 4,
      })
      await upload.done()
    })
    return null
  },
  /** Downloads keys to local files (each written whole; the caller renames them into place). */
  async s3Get(items, concurrency) {
    const { GetObjectCommand } = require("@aws-sdk/client-s3")
    const { pipeline } = require("node:stream/promises")
    await pool(items, concurrency, async (it) => {
      const r = await client3().send(new GetObjectCommand({ Bucket: bucket, Key: it.key }))
      await pipeline(r.Body, fs.createWriteStream(it.file))
    })
    return null
  },
  /** The size of each key, or null where there is none. */
  async s3Head(keys, concurrency) {
    const { HeadObjectCommand } = require("@aws-sdk/client-s3")
    const sizes = new Array(keys.length).fill(null)
    await pool(
      keys.map((key, i) => ({ key, i })),
      concurrency,
      async (it) => {
        try {
          const r = await client3().send(new HeadObjectCommand({ Bucket: bucket, Key: it.key }))
          sizes[it.i] = r.ContentLength ?? 0
        } catch (e) {
          const status = e?.$metadata?.httpStatusCode
          if (status !== 404 && e?.name !== "NotFound" && e?.name !== "NoSuchKey") throw e
        }
      },
    )
    return sizes
  },
  /** Every key under a prefix, with its size and last-modified time (ms). */
  async s3List(prefix) {
    const { ListObjectsV2Command } = require("@aws-sdk/client-s3")
    const out = []
    let token
    do {
      const r = await client3().send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      )
      for (const o of r.Contents ?? [])
        out.push({ key: o.Key, size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 })
      token = r.IsTruncated ? r.NextContinuationToken : undefined
    } while (token !== undefined)
    return out
  },
  async s3Delete(keys) {
    const { DeleteObjectsCommand } = require("@aws-sdk/client-s3")
    for (let i = 0; i < keys.length; i += 1000) {
      const r = await client3().send(
        new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true },
        }),
      )
      if (r.Errors !== undefined && r.Errors.length > 0)
        throw new Error(`could not delete ${r.Errors[0].Key}: ${r.Errors[0].Message}`)
    }
    return null
  },
  async s3EnsureBucket() {
    const { HeadBucketCommand, CreateBucketCommand } = require("@aws-sdk/client-s3")
    try {
      await client3().send(new HeadBucketCommand({ Bucket: bucket }))
      return false
    } catch (e) {
      if (e?.$metadata?.httpStatusCode !== 404 && e?.name !== "NotFound") throw e
    }
    await client3().send(new CreateBucketCommand({ Bucket: bucket }))
    return true
  },
  async close() {
    if (client !== undefined) await client.end().catch(() => {})
    if (s3 !== undefined) s3.destroy()
    return null
  },
}

const pool = async (items, concurrency, f) => {
  let next = 0
  const lanes = Array.from({ length: Math.max(1, Math.min(concurrency ?? 8, items.length)) }, async () => {
    while (next < items.length) await f(items[next++])
  })
  await Promise.all(lanes)
}

port.on("message", async (msg) => {
  let answer
  try {
    answer = { ok: true, value: await ops[msg.op](...msg.args) }
  } catch (e) {
    answer = {
      ok: false,
      error: {
        message: e?.message || String(e) || e?.name || "error",
        code: e?.code,
        name: e?.name,
        status: e?.$metadata?.httpStatusCode,
      },
    }
  }
  port.postMessage(answer)
  Atomics.store(signal, 0, 1)
  Atomics.notify(signal, 0)
})
