/**
 * Numbered schema migrations. Each runs once, in order, inside a transaction;
 * `PRAGMA user_version` records the last one applied. Append, never edit.
 */
export const migrations: ReadonlyArray<string> = [
  // 1: the store
  `
  CREATE TABLE artifacts (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL,
    meta TEXT,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE artifact_files (
    digest TEXT NOT NULL REFERENCES artifacts(digest) ON DELETE CASCADE,
    path TEXT NOT NULL,
    mode INTEGER NOT NULL,
    file_digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (digest, path)
  );
  CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_path TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    status TEXT NOT NULL,
    argv TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL
  );
  CREATE TABLE executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    node TEXT NOT NULL,
    plugin TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    step_key TEXT,
    status TEXT NOT NULL,
    produced_by INTEGER,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    ms REAL,
    backend TEXT,
    annotations TEXT,
    error TEXT,
    ingredients TEXT
  );
  CREATE INDEX executions_run ON executions(run_id);
  CREATE INDEX executions_node ON executions(node, id);
  CREATE INDEX executions_key ON executions(step_key);
  CREATE TABLE execution_inputs (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (execution_id, name, position)
  );
  CREATE TABLE execution_outputs (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (execution_id, name)
  );
  CREATE INDEX execution_outputs_digest ON execution_outputs(digest);
  CREATE TABLE step_cache (
    step_key TEXT PRIMARY KEY,
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    outputs TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE source_files (
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    file_digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (digest, path)
  );
  CREATE TABLE stat_cache (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns TEXT NOT NULL,
    ctime_ns TEXT NOT NULL,
    digest TEXT NOT NULL,
    racy INTEGER NOT NULL
  );
  CREATE TABLE leases (
    step_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
  );
  CREATE TABLE logs (
    execution_id INTEGER PRIMARY KEY REFERENCES executions(id),
    text TEXT NOT NULL
  );
  CREATE TABLE metrics (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    step INTEGER,
    value REAL NOT NULL,
    at INTEGER NOT NULL
  );
  CREATE INDEX metrics_execution ON metrics(execution_id, name, step);
  CREATE TABLE pins (
    digest TEXT PRIMARY KEY,
    note TEXT,
    created_at INTEGER NOT NULL
  );
  `,
]
