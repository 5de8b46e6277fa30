/**
 * The `tokenizers` package returns each encoding as a small JS object that
 * owns a large native one, freed only when the JS object is collected. V8
 * sees the small object and feels no pressure, so native memory can pile up
 * between V8's own collections (with 4 MB batches, a 40 MB corpus reached
 * 1 GB of RSS). Batches are small for that reason, and a collection forced
 * every few million tokens bounds what is left waiting for one.
 */
import * as v8 from "node:v8"
import * as vm from "node:vm"

let collect: (() => void) | undefined

/** A full garbage collection: `global.gc` when exposed, otherwise exposed on first use. */
export const collectGarbage = (): void => {
  if (collect === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc
    if (typeof exposed === "function") collect = exposed
    else {
      v8.setFlagsFromString("--expose-gc")
      collect = vm.runInNewContext("gc") as () => void
    }
  }
  collect()
}
