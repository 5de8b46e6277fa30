/** Opening a store races other processes: SQLITE_BUSY is waited out, anything else is not. */
import { describe, expect, it } from "vitest"
import { retryBusy } from "../../cache/Store.ts"

const busy = () => Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" })

describe("retryBusy", () => {
  it("tries again while SQLite answers busy, then returns", () => {
    let calls = 0
    const r = retryBusy(() => {
      calls++
      if (calls < 4) throw busy()
      return "opened"
    })
    expect(r).toBe("opened")
    expect(calls).toBe(4)
  })

  it("passes any other error through at once, and gives up on busy after its time", () => {
    let calls = 0
    expect(() =>
      retryBusy(() => {
        calls++
        throw new Error("no such table")
      }),
    ).toThrow("no such table")
    expect(calls).toBe(1)
    expect(() =>
      retryBusy(() => {
        throw busy()
      }, 30),
    ).toThrow("database is locked")
  })
})
