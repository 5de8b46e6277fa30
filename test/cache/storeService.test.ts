/**
 * The store as an Effect service: the same program runs a pipeline on the
 * embedded layer (SQLite, local objects) and on the shared one (a real
 * PostgreSQL, a shared directory of objects), and each layer closes its
 * store when the program ends.
 */
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import type { Store } from "../../cache/Store.ts"
import { StoreService } from "../../cache/StoreService.ts"
import { loadPipeline, setEngineUrl } from "../../core/Loader.ts"
import { runWithStore } from "../../core/Run.ts"
import { engineProject } from "../fixtures/engine/project.ts"
import { repoRoot, tempDir } from "../support/cli.ts"
import { freshDatabase, postgresUrl, psql } from "../support/services.ts"

// The pipeline's `tunegraph` imports resolve to these sources, the engine under test.
setEngineUrl(pathToFileURL(path.join(repoRoot, "index.ts")).href)

const program = (dir: string) =>
  Effect.gen(function* () {
    const file = path.join(dir, "pipeline.ts")
    const { pipeline } = yield* Effect.promise(() => loadPipeline(file, path.join(dir, "compiled")))
    const result = yield* runWithStore({ pipeline, pipelinePath: file, baseDir: dir })
    const store = yield* StoreService
    return { result, store }
  })

const closed = (store: Store) => () => store.db.prepare("SELECT 1").get()

describe("StoreService", () => {
  it("runs a pipeline on the embedded layer, and closes the store after", async () => {
    const dir = engineProject("service")
    const { result, store } = await Effect.runPromise(
      Effect.scoped(program(dir).pipe(Effect.provide(StoreService.embedded(path.join(dir, ".tunegraph"))))),
    )
    expect(result.status).toBe("succeeded")
    expect(result.steps.filter((s) => s.status === "ran")).toHaveLength(9)
    expect(store.shared).toBe(false)
    expect(closed(store)).toThrow(/not open/)
  })

  const server = postgresUrl()
  it.skipIf(server === undefined)("runs the same program on the shared layer (PostgreSQL)", async () => {
    const dir = engineProject("service-shared")
    const database = freshDatabase(server!)
    const layer = StoreService.shared({
      database,
      objects: tempDir("service-objects"),
      local: path.join(dir, ".tunegraph"),
    })
    const { result, store } = await Effect.runPromise(Effect.scoped(program(dir).pipe(Effect.provide(layer))))
    expect(result.status).toBe("succeeded")
    expect(store.shared).toBe(true)
    expect(Number(psql(database, "SELECT count(*) FROM executions WHERE status = 'ran'"))).toBe(9)
    expect(closed(store)).toThrow(/closed/)
  })
})
