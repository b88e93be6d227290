-- ARM resources (groups, pools, identities, clusters, deployments, role assignments), their
-- write-only secrets, long-running operations and server settings.
CREATE TABLE resources (
    id_key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    subscription TEXT NOT NULL,
    resource_group TEXT NOT NULL,
    type_key TEXT NOT NULL,
    name TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX resources_by_group ON resources (subscription, resource_group, type_key);
CREATE INDEX resources_by_type ON resources (type_key);
CREATE TABLE secrets (
    resource_key TEXT NOT NULL,
    name TEXT NOT NULL,
    subscription TEXT NOT NULL,
    resource_group TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_key, name)
);
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    subscription TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
