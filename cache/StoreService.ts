/**
 * The store as an Effect service: one interface (cache/Store.ts `Store`,
 * whose database is SQLite or PostgreSQL behind cache/Db.ts and whose
 * objects are local, in a shared directory or in a bucket) and a layer per
 * implementation. A program that needs a store asks for `StoreService`; the
 * layer opens it (migrating it, for the embedded store) and closes it when
 * the program's scope ends.
 *
 *   Effect.runPromise(runWithStore(options).pipe(Effect.provide(StoreService.shared(config))))
 */
import { Context, Effect, Layer } from "effect"
import { type SharedStoreConfig, Store } from "./Store.ts"

export class StoreService extends Context.Service<StoreService, Store>()("tunegraph/cache/StoreService") {
  /** SQLite and local objects in `dir` (`.tunegraph/`), made when missing. */
  static readonly embedded = (dir: string) =>
    Layer.effect(
      StoreService,
      Effect.acquireRelease(
        Effect.sync(() => Store.open(dir)),
        (store) => Effect.sync(() => store.close()),
      ),
    )

  /** PostgreSQL and a bucket or shared directory, with this machine's cache in `config.local`. */
  static readonly shared = (config: SharedStoreConfig, options: { readonly migrate?: boolean } = {}) =>
    Layer.effect(
      StoreService,
      Effect.acquireRelease(
        Effect.try({ try: () => Store.openShared(config, options), catch: (e) => e as Error }),
        (store) => Effect.sync(() => store.close()),
      ),
    )
}
