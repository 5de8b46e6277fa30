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
  // 2: the documented read-only views behind `tunegraph query` (see cache/Query.ts).
  // Named v_* here because the tables own the short names; `query` shows them as runs, executions, ...
  `
  CREATE VIEW v_runs AS
  SELECT r.id AS run, r.pipeline, r.pipeline_path, r.status,
         strftime('%Y-%m-%dT%H:%M:%fZ', r.started_at / 1000.0, 'unixepoch') AS started,
         r.started_at, r.finished_at, r.finished_at - r.started_at AS ms,
         r.argv, r.host, r.pid,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id) AS steps,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'ran') AS ran,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'cached') AS cached,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'failed') AS failed
  FROM runs r;

  CREATE VIEW v_executions AS
  SELECT e.id AS execution, e.run_id AS run, e.node, e.plugin, e.plugin_version AS version,
         e.fingerprint, e.step_key, e.status, e.status = 'cached' AS cached,
         e.produced_by, coalesce(e.produced_by, e.id) AS computed_by,
         strftime('%Y-%m-%dT%H:%M:%fZ', e.started_at / 1000.0, 'unixepoch') AS started,
         e.started_at, e.finished_at, e.ms, e.backend, e.error,
         json_extract(e.ingredients, '$.params') AS params, e.ingredients, e.annotations
  FROM executions e;

  CREATE VIEW v_outputs AS
  SELECT o.execution_id AS execution, e.run_id AS run, e.node, o.name AS output, o.digest,
         a.kind, a.size, e.status
  FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
  LEFT JOIN artifacts a ON a.digest = o.digest;

  CREATE VIEW v_artifacts AS
  SELECT a.digest, a.kind, a.is_dir, a.size, a.meta,
         strftime('%Y-%m-%dT%H:%M:%fZ', a.created_at / 1000.0, 'unixepoch') AS created,
         p.execution_id AS produced_by, e.run_id AS run, e.node, p.name AS output,
         EXISTS (SELECT 1 FROM pins WHERE pins.digest = a.digest) AS pinned
  FROM artifacts a
  LEFT JOIN execution_outputs p ON p.rowid = (
    SELECT o.rowid FROM execution_outputs o JOIN executions x ON x.id = o.execution_id
    WHERE o.digest = a.digest AND x.status = 'ran' ORDER BY o.execution_id LIMIT 1)
  LEFT JOIN executions e ON e.id = p.execution_id;

  CREATE VIEW v_lineage_edges AS
  SELECT i.digest AS from_digest,
         (SELECT u.node FROM execution_outputs uo JOIN executions u ON u.id = uo.execution_id
           WHERE uo.digest = i.digest AND u.run_id = e.run_id LIMIT 1) AS from_node,
         i.name AS input, i.position,
         e.id AS execution, e.run_id AS run, e.node AS node, e.plugin, e.status,
         o.name AS output, o.digest AS to_digest
  FROM executions e
  JOIN execution_inputs i ON i.execution_id = e.id
  JOIN execution_outputs o ON o.execution_id = e.id;

  CREATE VIEW v_metrics AS
  SELECT e.run_id AS run, e.node, e.id AS execution, m.execution_id AS computed_by,
         m.name, m.step, m.value, m.at
  FROM executions e JOIN metrics m ON m.execution_id = coalesce(e.produced_by, e.id);

  CREATE VIEW v_sources AS
  SELECT e.run_id AS run, e.node, e.id AS execution, o.digest AS source_digest,
         s.path, s.file_digest, s.size
  FROM executions e
  JOIN execution_outputs o ON o.execution_id = e.id
  JOIN source_files s ON s.digest = o.digest
  WHERE e.plugin = 'source';

  CREATE VIEW v_logs AS
  SELECT e.run_id AS run, e.node, e.id AS execution, l.execution_id AS computed_by, l.text
  FROM executions e JOIN logs l ON l.execution_id = coalesce(e.produced_by, e.id);

  CREATE VIEW v_pins AS
  SELECT digest, note, strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch') AS created
  FROM pins;
  `,
  // 3: lineage_edges names the step an input came from even when a step passes bytes through
  // unchanged (its input and output then share a digest): the latest producer in the same run
  // that finished before the consumer started, never the consumer itself.
  `
  DROP VIEW v_lineage_edges;
  CREATE VIEW v_lineage_edges AS
  SELECT i.digest AS from_digest,
         (SELECT u.node FROM execution_outputs uo JOIN executions u ON u.id = uo.execution_id
           WHERE uo.digest = i.digest AND u.run_id = e.run_id AND u.id != e.id
             AND coalesce(u.finished_at, u.started_at) <= e.started_at
           ORDER BY coalesce(u.finished_at, u.started_at) DESC, u.id DESC LIMIT 1) AS from_node,
         i.name AS input, i.position,
         e.id AS execution, e.run_id AS run, e.node AS node, e.plugin, e.status,
         o.name AS output, o.digest AS to_digest
  FROM executions e
  JOIN execution_inputs i ON i.execution_id = e.id
  JOIN execution_outputs o ON o.execution_id = e.id;
  `,
  // 4: the chunk index of chunked data steps (core/Chunks.ts). A chunk's result is an object with an
  // artifacts row of kind Chunk (so verify re-hashes it and gc's object sweep sees it); chunk_uses
  // records which run and node used each entry, so gc keeps the entries of kept runs.
  `
  CREATE TABLE chunks (
    chunk_key  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    step       TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE chunk_uses (
    run_id    TEXT NOT NULL,
    node      TEXT NOT NULL,
    chunk_key TEXT NOT NULL,
    PRIMARY KEY (run_id, node, chunk_key)
  ) WITHOUT ROWID;
  CREATE INDEX chunk_uses_by_key ON chunk_uses (chunk_key);
  CREATE VIEW v_chunks AS
  SELECT c.chunk_key, c.digest, c.step, a.size,
         strftime('%Y-%m-%dT%H:%M:%fZ', c.created_at / 1000.0, 'unixepoch') AS created,
         (SELECT count(*) FROM chunk_uses u WHERE u.chunk_key = c.chunk_key) AS uses
  FROM chunks c LEFT JOIN artifacts a ON a.digest = c.digest;
  `,
  // 5: line indexes of large line-based source files (core/Chunks.ts LineIndex), made while the file
  // is hashed, so a chunked step reads only the chunks it has not seen. Keyed by the file's digest and
  // the chunk target; gc drops those of digests no stat entry holds any more.
  `
  CREATE TABLE line_indexes (
    digest     TEXT NOT NULL,
    target     INTEGER NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (digest, target)
  ) WITHOUT ROWID;
  `,
  // 6: a running run's heartbeat, so that another machine sharing the store can tell a dead one
  // (its process is out of reach of processAlive there) and reap it as crashed.
  `
  ALTER TABLE runs ADD COLUMN heartbeat_at INTEGER;
  `,
]

const iso = (ms: string) =>
  `to_char(to_timestamp(${ms} / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`

/**
 * The same schema for a shared store's PostgreSQL database, numbered on its
 * own (`schema_migrations` records the last one applied; an advisory lock
 * keeps two processes from migrating at once). Its first migration is the
 * SQLite schema as migrations 1-5 leave it, with PostgreSQL's types: BIGINT
 * times, sizes and ids, and a `rowid` where the store orders by insertion.
 * The views carry the same names and columns as SQLite's. Append, never edit.
 */
export const postgresMigrations: ReadonlyArray<string> = [
  `
  CREATE TABLE artifacts (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size BIGINT NOT NULL,
    meta TEXT,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE artifact_files (
    digest TEXT NOT NULL REFERENCES artifacts(digest) ON DELETE CASCADE,
    path TEXT NOT NULL,
    mode INTEGER NOT NULL,
    file_digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (digest, path)
  );
  CREATE INDEX artifact_files_file ON artifact_files(file_digest);
  CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_path TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    status TEXT NOT NULL,
    argv TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL
  );
  CREATE TABLE executions (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    node TEXT NOT NULL,
    plugin TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    step_key TEXT,
    status TEXT NOT NULL,
    produced_by BIGINT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    ms DOUBLE PRECISION,
    backend TEXT,
    annotations TEXT,
    error TEXT,
    ingredients TEXT
  );
  CREATE INDEX executions_run ON executions(run_id);
  CREATE INDEX executions_node ON executions(node, id);
  CREATE INDEX executions_key ON executions(step_key);
  CREATE TABLE execution_inputs (
    execution_id BIGINT NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (execution_id, name, position)
  );
  CREATE TABLE execution_outputs (
    rowid BIGSERIAL,
    execution_id BIGINT NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (execution_id, name)
  );
  CREATE INDEX execution_outputs_digest ON execution_outputs(digest);
  CREATE TABLE step_cache (
    step_key TEXT PRIMARY KEY,
    execution_id BIGINT NOT NULL REFERENCES executions(id),
    outputs TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE source_files (
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    file_digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (digest, path)
  );
  CREATE INDEX source_files_file ON source_files(file_digest);
  CREATE TABLE stat_cache (
    path TEXT PRIMARY KEY,
    dev BIGINT NOT NULL,
    ino BIGINT NOT NULL,
    size BIGINT NOT NULL,
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
    acquired_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
  );
  CREATE TABLE logs (
    execution_id BIGINT PRIMARY KEY REFERENCES executions(id),
    text TEXT NOT NULL
  );
  CREATE TABLE metrics (
    rowid BIGSERIAL PRIMARY KEY,
    execution_id BIGINT NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    step INTEGER,
    value DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL
  );
  CREATE INDEX metrics_execution ON metrics(execution_id, name, step);
  CREATE TABLE pins (
    digest TEXT PRIMARY KEY,
    note TEXT,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE chunks (
    chunk_key  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    step       TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE chunk_uses (
    run_id    TEXT NOT NULL,
    node      TEXT NOT NULL,
    chunk_key TEXT NOT NULL,
    PRIMARY KEY (run_id, node, chunk_key)
  );
  CREATE INDEX chunk_uses_by_key ON chunk_uses (chunk_key);
  CREATE TABLE line_indexes (
    digest     TEXT NOT NULL,
    target     BIGINT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (digest, target)
  );

  CREATE VIEW v_runs AS
  SELECT r.id AS run, r.pipeline, r.pipeline_path, r.status,
         ${iso("r.started_at")} AS started,
         r.started_at, r.finished_at, r.finished_at - r.started_at AS ms,
         r.argv, r.host, r.pid,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id) AS steps,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'ran') AS ran,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'cached') AS cached,
         (SELECT count(*) FROM executions e WHERE e.run_id = r.id AND e.status = 'failed') AS failed
  FROM runs r;

  CREATE VIEW v_executions AS
  SELECT e.id AS execution, e.run_id AS run, e.node, e.plugin, e.plugin_version AS version,
         e.fingerprint, e.step_key, e.status, (e.status = 'cached')::int AS cached,
         e.produced_by, coalesce(e.produced_by, e.id) AS computed_by,
         ${iso("e.started_at")} AS started,
         e.started_at, e.finished_at, e.ms, e.backend, e.error,
         (e.ingredients::json -> 'params')::text AS params, e.ingredients, e.annotations
  FROM executions e;

  CREATE VIEW v_outputs AS
  SELECT o.execution_id AS execution, e.run_id AS run, e.node, o.name AS output, o.digest,
         a.kind, a.size, e.status
  FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
  LEFT JOIN artifacts a ON a.digest = o.digest;

  CREATE VIEW v_artifacts AS
  SELECT a.digest, a.kind, a.is_dir, a.size, a.meta,
         ${iso("a.created_at")} AS created,
         p.execution_id AS produced_by, e.run_id AS run, e.node, p.name AS output,
         EXISTS (SELECT 1 FROM pins WHERE pins.digest = a.digest)::int AS pinned
  FROM artifacts a
  LEFT JOIN execution_outputs p ON p.rowid = (
    SELECT o.rowid FROM execution_outputs o JOIN executions x ON x.id = o.execution_id
    WHERE o.digest = a.digest AND x.status = 'ran' ORDER BY o.execution_id LIMIT 1)
  LEFT JOIN executions e ON e.id = p.execution_id;

  CREATE VIEW v_lineage_edges AS
  SELECT i.digest AS from_digest,
         (SELECT u.node FROM execution_outputs uo JOIN executions u ON u.id = uo.execution_id
           WHERE uo.digest = i.digest AND u.run_id = e.run_id AND u.id != e.id
             AND coalesce(u.finished_at, u.started_at) <= e.started_at
           ORDER BY coalesce(u.finished_at, u.started_at) DESC, u.id DESC LIMIT 1) AS from_node,
         i.name AS input, i.position,
         e.id AS execution, e.run_id AS run, e.node AS node, e.plugin, e.status,
         o.name AS output, o.digest AS to_digest
  FROM executions e
  JOIN execution_inputs i ON i.execution_id = e.id
  JOIN execution_outputs o ON o.execution_id = e.id;

  CREATE VIEW v_metrics AS
  SELECT e.run_id AS run, e.node, e.id AS execution, m.execution_id AS computed_by,
         m.name, m.step, m.value, m.at
  FROM executions e JOIN metrics m ON m.execution_id = coalesce(e.produced_by, e.id);

  CREATE VIEW v_sources AS
  SELECT e.run_id AS run, e.node, e.id AS execution, o.digest AS source_digest,
         s.path, s.file_digest, s.size
  FROM executions e
  JOIN execution_outputs o ON o.execution_id = e.id
  JOIN source_files s ON s.digest = o.digest
  WHERE e.plugin = 'source';

  CREATE VIEW v_logs AS
  SELECT e.run_id AS run, e.node, e.id AS execution, l.execution_id AS computed_by, l.text
  FROM executions e JOIN logs l ON l.execution_id = coalesce(e.produced_by, e.id);

  CREATE VIEW v_pins AS
  SELECT digest, note, ${iso("created_at")} AS created
  FROM pins;

  CREATE VIEW v_chunks AS
  SELECT c.chunk_key, c.digest, c.step, a.size,
         ${iso("c.created_at")} AS created,
         (SELECT count(*) FROM chunk_uses u WHERE u.chunk_key = c.chunk_key) AS uses
  FROM chunks c LEFT JOIN artifacts a ON a.digest = c.digest;
  `,
  // 2: as SQLite's 6, a running run's heartbeat.
  `
  ALTER TABLE runs ADD COLUMN heartbeat_at BIGINT;
  `,
]
