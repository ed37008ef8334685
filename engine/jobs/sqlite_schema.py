"""The store's schema as a list of migrations, applied in order and counted in `PRAGMA user_version`.

A database records how many migrations it has had, so a newer engine upgrades an older file in
place, in one transaction per step, and an older engine refuses a file it does not understand
instead of misreading it. Migrations are only ever appended: an edit to one that has shipped would
leave existing databases on a schema no code describes.
"""

from __future__ import annotations

INITIAL = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    api TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output_node TEXT NOT NULL,
    cost_micros INTEGER NOT NULL,
    key_id TEXT,
    idempotency_key TEXT,
    webhook_url TEXT,
    base_url TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    outputs TEXT,
    error TEXT,
    metrics TEXT,
    progress_value REAL,
    progress_total REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (COALESCE(key_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    balance_micros INTEGER NOT NULL,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    rate_per_minute INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    url TEXT NOT NULL,
    status_code INTEGER,
    error TEXT
);
"""


"""Version 1: jobs, their logs, API keys and the webhook delivery log, as first shipped (with IF NOT
EXISTS, so files created before schema versioning, at user_version 0, pass through it unchanged)."""

WEBHOOK_OUTBOX = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    job_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (due_at);
"""
"""Version 2: webhooks waiting for delivery live in the store, so retries survive a restart."""

COMFY_JOBS = """
ALTER TABLE jobs ADD COLUMN number REAL;
ALTER TABLE jobs ADD COLUMN extra_data TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN targets TEXT;
ALTER TABLE jobs ADD COLUMN report TEXT;
CREATE INDEX IF NOT EXISTS jobs_api ON jobs (api, seq);
"""
"""Version 3: what ComfyUI's server API shows of a job. `number` orders the queue (NULL: by `seq`, the
arrival order), `extra_data` and `targets` are what was submitted with the graph, `report` what its run
showed (every node's UI output and the status messages); jobs stored before have none of them."""

ADMIN_KEYS = """
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
"""
"""Version 4: admin keys may publish, replace, export and import endpoints (the /v1/admin routes).
Every key that existed before is an ordinary one, so upgrading grants no one new powers."""

API_V2 = """
CREATE TABLE assets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    digest TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    file_path TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    job_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX assets_owner ON assets (owner, seq);
CREATE INDEX assets_digest ON assets (digest, owner);
CREATE TABLE idempotency_keys (
    owner TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (owner, scope, key)
);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys (claimed_at);
"""
"""Version 5: Comfy API v2. Its assets, one owner's records over content-addressed blobs
(engine.assets), and its single-use Idempotency-Keys, claimed per owner and operation (`scope`).
`owner` is the API key's id, or '' for everything on a server with open access."""

ASSET_LIFETIMES = """
ALTER TABLE assets ADD COLUMN expires_at REAL;
ALTER TABLE assets ADD COLUMN node_id TEXT;
ALTER TABLE assets ADD COLUMN output_type TEXT;
CREATE INDEX assets_expires ON assets (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX assets_job ON assets (job_id) WHERE job_id IS NOT NULL;
CREATE TABLE asset_holds (
    asset_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (asset_id, job_id)
);
CREATE INDEX asset_holds_job ON asset_holds (job_id);
"""
"""Version 6: how long assets live. An upload's `expires_at` (NULL: it does not expire); a job's output,
recorded as its node finishes (`node_id`, `output_type`), lives as long as its job's record. A job that
is queued or running holds the assets its workflow references (`asset_holds`), so they cannot be
deleted under it."""

MIGRATIONS: tuple[str, ...] = (INITIAL, WEBHOOK_OUTBOX, COMFY_JOBS, ADMIN_KEYS, API_V2, ASSET_LIFETIMES)
