/** Suites that need the shared data say why they skip, and fail under CI=true instead. */
import { afterEach, describe, expect, it, vi } from "vitest"
import { haveShared, storiesBin, tok512Bin } from "./data.ts"

const ci = process.env.CI
afterEach(() => {
  if (ci === undefined) delete process.env.CI
  else process.env.CI = ci
  vi.restoreAllMocks()
})

describe("test data", () => {
  it("stories260K and tok512 ship with the repository", () => {
    expect(haveShared("never skipped", storiesBin, tok512Bin)).toBe(true)
  })

  it("a missing shared file skips with the reason printed, and fails under CI=true", () => {
    delete process.env.CI
    const write = vi.spyOn(process.stderr, "write").mockImplementation(() => true)
    expect(haveShared("the X suite", "/nonexistent/x.jsonl")).toBe(false)
    expect(String(write.mock.calls[0]?.[0])).toContain(
      "skipping the X suite: /nonexistent/x.jsonl is missing",
    )
    process.env.CI = "true"
    expect(() => haveShared("the X suite", "/nonexistent/x.jsonl")).toThrow(/CI=true and the X suite/)
  })
})
