-- The auth engine's lookups: role assignments by principal, identities by client id.
ALTER TABLE resources ADD COLUMN principal_key TEXT;
ALTER TABLE resources ADD COLUMN client_key TEXT;
CREATE INDEX resources_by_principal ON resources (principal_key, type_key);
-- NULLs do not collide in a UNIQUE index (SQLite and PostgreSQL alike).
CREATE UNIQUE INDEX resources_by_client ON resources (client_key);
