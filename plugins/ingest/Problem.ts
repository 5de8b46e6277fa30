/**
 * What went wrong with a source record, and where: the file, the line (and,
 * for CSV and JSON arrays, the row or element), the field, the problem.
 */
export interface Where {
  /** 1-based physical line where the record starts. */
  readonly line?: number
  /** 1-based data row (CSV, Parquet) or array element (JSON). */
  readonly row?: number
  readonly unit?: "row" | "element"
}

export interface Problem {
  readonly field?: string
  readonly message: string
}

/** A problem that stops a file from being read at all (not skippable per record). */
export class SourceError extends Error {
  constructor(
    readonly where: Where,
    readonly problem: Problem,
  ) {
    super(problem.message)
  }
}

/** "row 7 (line 9)", "element 3 (line 12)", "line 5". */
export const describeWhere = (w: Where): string => {
  if (w.row !== undefined) {
    const unit = w.unit ?? "row"
    return w.line !== undefined ? `${unit} ${w.row} (line ${w.line})` : `${unit} ${w.row}`
  }
  return w.line !== undefined ? `line ${w.line}` : "whole file"
}

/** The one-line message a user sees: `data.csv: row 7 (line 9): field "output": expected a string, got number 3`. */
export const describe = (file: string, w: Where, p: Problem): string =>
  `${file}: ${describeWhere(w)}: ${p.field === undefined ? "" : `field "${p.field}": `}${p.message}`

/** Short preview of a value for a message. */
export const preview = (v: unknown): string => {
  if (v === null) return "null"
  if (Array.isArray(v)) return `an array of ${v.length}`
  switch (typeof v) {
    case "string":
      return v.length > 40 ? `string ${JSON.stringify(`${v.slice(0, 40)}…`)}` : `string ${JSON.stringify(v)}`
    case "number":
    case "boolean":
    case "bigint":
      return `${typeof v} ${String(v)}`
    case "object":
      return "an object"
    default:
      return typeof v
  }
}

/** Where a record came from, for parsers to report to the step. */
export interface RawSink {
  /** A decoded source record (an object, unless the source is malformed). */
  record(value: unknown, where: Where): void
  /** A record that could not be decoded; the step fails or skips it per `onInvalid`. */
  invalid(where: Where, problem: Problem): void
}
