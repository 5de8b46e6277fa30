/** Feeds text through Utf8Lines into a parser in chunks of a given size, collecting what the sink gets. */
import type { BytesHandler, SegmentHandler } from "../../../plugins/ingest/Lines.ts"
import { Utf8Lines } from "../../../plugins/ingest/Lines.ts"
import type { Problem, RawSink, Where } from "../../../plugins/ingest/Problem.ts"

export interface Collected {
  readonly records: Array<{ value: unknown; where: Where }>
  readonly invalid: Array<{ where: Where; problem: Problem }>
}

export const collector = (): Collected & { sink: RawSink } => {
  const records: Collected["records"] = []
  const invalid: Collected["invalid"] = []
  return {
    records,
    invalid,
    sink: {
      record: (value, where) => records.push({ value, where }),
      invalid: (where, problem) => invalid.push({ where, problem }),
    },
  }
}

export const feed = (
  input: string | Buffer,
  parser: { segment: SegmentHandler; bytes?: BytesHandler; end?: () => void },
  chunk = 7,
  maxLineBytes = 1 << 20,
): void => {
  const bytes = typeof input === "string" ? Buffer.from(input) : input
  const lines = new Utf8Lines(parser.segment, maxLineBytes, parser.bytes)
  for (let i = 0; i < bytes.length; i += chunk) lines.push(bytes.subarray(i, i + chunk))
  lines.end()
  parser.end?.()
}
