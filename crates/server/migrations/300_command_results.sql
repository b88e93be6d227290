-- Run Command results.
CREATE TABLE command_results (
    id TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    cluster_key TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    logs TEXT NOT NULL,
    reason TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX command_results_by_state ON command_results (state);
CREATE INDEX command_results_by_finish ON command_results (finished_at);
