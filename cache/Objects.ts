/**
 * Objects in an S3-compatible bucket, for a shared store. The layout mirrors
 * a local store's objects/: a file object is the key `<prefix>/ab/cdef...`,
 * a directory object one key per file under `<prefix>/ab/cdef.../`. Its
 * manifest stays in the database (artifact_files), so a reader lists no keys
 * to fetch one. Every machine reads through its own cache: an object is
 * downloaded into its local objects/ once, verified, and made read-only
 * there like any stored object.
 *
 * The client is the AWS SDK's, in the worker of cache/Remote.ts. Its
 * credentials and region come from the environment as for the AWS CLI
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, a profile...);
 * AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) points it at another
 * S3-compatible service (MinIO, Ceph, moto), addressed by path.
 */
import type { Remote } from "./Remote.ts"

export interface ObjectFiles {
  readonly isDir: boolean
  readonly size: number
  /** A directory object's files: path and size. */
  readonly entries: ReadonlyArray<{ readonly path: string; readonly size: number }>
}

export interface ObjectBackend {
  /** The bucket in words (s3://bucket/prefix). */
  readonly where: string
  /** Uploads the object at `local` where the bucket does not hold its files with their sizes. */
  push(digest: string, local: string, obj: ObjectFiles): void
  /** True when every file of the object is in the bucket with its recorded size. */
  present(digest: string, obj: ObjectFiles): boolean
  /** Downloads the object's files under `dest` (a file, or a directory made here). */
  pull(digest: string, dest: string, obj: ObjectFiles): void
  /** Deletes the object's keys (all of them: its rows may be gone already). */
  remove(digest: string): void
  /** Every object in the bucket: its digest and its newest key's time (ms). */
  list(): Array<{ digest: string; modified: number }>
  /** Creates the bucket when it does not exist; true when it was created. */
  ensureBucket(): boolean
}

const CONCURRENCY = 8

export class S3Objects implements ObjectBackend {
  private constructor(
    private readonly remote: Remote,
    readonly where: string,
    private readonly prefix: string,
  ) {}

  /** `s3://bucket/prefix`, through the worker that also holds the database connection. */
  static open(remote: Remote, url: string): S3Objects {
    const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url)
    if (m === null || m[1] === "") throw new Error(`${url}: an object store is s3://bucket/prefix`)
    const prefix = m[2]!.replace(/\/+$/, "")
    const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL
    remote.callAs(url, "s3Init", {
      bucket: m[1],
      region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1",
      endpoint,
      // S3-compatible services on a host of their own are addressed by path, not by subdomain
      forcePathStyle: endpoint !== undefined,
    })
    return new S3Objects(remote, `s3://${m[1]}${prefix === "" ? "" : `/${prefix}`}`, prefix)
  }

  private call<A>(op: string, ...args: ReadonlyArray<unknown>): A {
    return this.remote.callAs<A>(this.where, op, ...args)
  }

  private key(digest: string, rel?: string): string {
    const k = `${digest.slice(0, 2)}/${digest.slice(2)}${rel === undefined ? "" : `/${rel}`}`
    return this.prefix === "" ? k : `${this.prefix}/${k}`
  }

  private files(
    digest: string,
    obj: ObjectFiles,
  ): Array<{ key: string; rel: string | undefined; size: number }> {
    return obj.isDir
      ? obj.entries.map((e) => ({ key: this.key(digest, e.path), rel: e.path, size: e.size }))
      : [{ key: this.key(digest), rel: undefined, size: obj.size }]
  }

  push(digest: string, local: string, obj: ObjectFiles) {
    const files = this.files(digest, obj)
    const sizes = this.call<Array<number | null>>(
      "s3Head",
      files.map((f) => f.key),
      CONCURRENCY,
    )
    const missing = files.filter((f, i) => sizes[i] !== f.size)
    if (missing.length === 0) return
    this.call(
      "s3Put",
      missing.map((f) => ({ key: f.key, file: f.rel === undefined ? local : `${local}/${f.rel}` })),
      CONCURRENCY,
    )
  }

  present(digest: string, obj: ObjectFiles): boolean {
    const files = this.files(digest, obj)
    const sizes = this.call<Array<number | null>>(
      "s3Head",
      files.map((f) => f.key),
      CONCURRENCY,
    )
    return files.every((f, i) => sizes[i] === f.size)
  }

  pull(digest: string, dest: string, obj: ObjectFiles) {
    this.call(
      "s3Get",
      this.files(digest, obj).map((f) => ({
        key: f.key,
        file: f.rel === undefined ? dest : `${dest}/${f.rel}`,
      })),
      CONCURRENCY,
    )
  }

  remove(digest: string) {
    const keys = this.call<Array<{ key: string }>>("s3List", this.key(digest))
    if (keys.length > 0)
      this.call(
        "s3Delete",
        keys.map((k) => k.key),
      )
  }

  list(): Array<{ digest: string; modified: number }> {
    const keys = this.call<Array<{ key: string; modified: number }>>(
      "s3List",
      this.prefix === "" ? "" : `${this.prefix}/`,
    )
    const newest = new Map<string, number>()
    for (const k of keys) {
      const rel = this.prefix === "" ? k.key : k.key.slice(this.prefix.length + 1)
      const [shard, rest] = rel.split("/")
      if (shard === undefined || rest === undefined || shard.length !== 2) continue
      const digest = `${shard}${rest}`
      newest.set(digest, Math.max(newest.get(digest) ?? 0, k.modified))
    }
    return [...newest].map(([digest, modified]) => ({ digest, modified }))
  }

  ensureBucket(): boolean {
    return this.call<boolean>("s3EnsureBucket")
  }
}
