-- Sessions bound to sandboxes, and their executions.
CREATE TABLE sessions (
    pool_key TEXT NOT NULL,
    identifier TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_accessed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    etag TEXT NOT NULL,
    PRIMARY KEY (pool_key, identifier)
);
CREATE TABLE executions (
    pool_key TEXT NOT NULL,
    identifier TEXT NOT NULL,
    id TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code BIGINT,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    stdout_truncated BIGINT NOT NULL,
    stderr_truncated BIGINT NOT NULL,
    error TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    duration_ms BIGINT,
    PRIMARY KEY (pool_key, identifier, id)
);
CREATE INDEX executions_by_status ON executions (status);
