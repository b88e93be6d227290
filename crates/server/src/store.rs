//! Durable state over SQLite or PostgreSQL through sqlx's `Any` driver: one schema, portable SQL,
//! migrations recorded in `schema_migrations`.
//!
//! Resources keep their whole ARM envelope as JSON in one generic table keyed by the lower-cased
//! resource id, which makes GET by id, list by scope and cascade delete of a resource group one
//! query each. Later features add their own tables through new migrations.

use anyhow::Context as _;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::time::Duration;

/// Each entry is applied once, in order, inside a transaction; never edit a released entry, add a
/// new one.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE resources (
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
        )",
            "CREATE INDEX resources_by_group ON resources (subscription, resource_group, type_key)",
            "CREATE INDEX resources_by_type ON resources (type_key)",
            "CREATE TABLE secrets (
            resource_key TEXT NOT NULL,
            name TEXT NOT NULL,
            subscription TEXT NOT NULL,
            resource_group TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (resource_key, name)
        )",
            "CREATE TABLE operations (
            id TEXT PRIMARY KEY,
            subscription TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            finished_at TEXT
        )",
            "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ],
    ),
    (100, crate::auth::MIGRATION_100),
];

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One resource row. `body` is the full envelope as returned by GET (minus write-only secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Canonical casing.
    pub id: String,
    /// Lower-cased subscription id; empty for resources at the root scope.
    pub subscription: String,
    /// Lower-cased resource group name; empty outside a resource group.
    pub resource_group: String,
    /// Canonical type, e.g. `Microsoft.App/sessionPools`.
    pub resource_type: String,
    pub name: String,
    /// Lower-cased id of the scope the resource hangs off (role assignments); empty otherwise.
    pub scope: String,
    pub body: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// What `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub subscription: Option<&'a str>,
    pub resource_group: Option<&'a str>,
    pub resource_type: Option<&'a str>,
}

/// A recorded long-running operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: String,
    pub subscription: String,
    pub resource_id: String,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Counts the resource writes this process has committed (see [`Store::writes`]).
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens the database at `url` (`sqlite:…` or `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("unsupported database url (expected sqlite:… or postgres://…)");
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout=10000")
                        .execute(&mut *conn)
                        .await?;
                    // In WAL mode NORMAL syncs at checkpoints instead of on every commit: a
                    // commit still survives a crash of the server (it is in the WAL, in the OS's
                    // cache); only a power loss may undo the last ones. With FULL every commit
                    // (execution results, session clocks) waited for an fsync.
                    sqlx::query("PRAGMA synchronous=NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(10);
        }
        let pool = options
            .connect(url)
            .await
            .with_context(|| format!("connecting to the {backend:?} database"))?;
        let store = Self {
            pool,
            backend,
            writes: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// How many resource writes this process has committed. Caches of what resources decide
    /// (the auth tables' role assignments and identities) compare it to notice a change;
    /// writes by other processes on a shared database are not counted.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a committed write of resources (call after the commit, so that a reader that saw
    /// the old rows also sees the old count).
    pub(crate) fn note_write(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The SQLite url of the default database file in `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("sandpool.db").display()
        )
    }

    /// The connection pool, for features that keep their own tables (see `store_sessions`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .context("creating schema_migrations")?;
        // Features keep their migrations beside their code (sessions: 200–299).
        let all = MIGRATIONS
            .iter()
            .chain(crate::store_sessions::MIGRATIONS.iter())
            .chain(crate::store_commands::MIGRATIONS.iter());
        for (version, statements) in all {
            let mut tx = self.pool.begin().await?;
            let done: i64 =
                sqlx::query("SELECT COUNT(*) FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            if done > 0 {
                continue;
            }
            for stmt in *statements {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {version}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(crate::now_rfc3339())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<StoredResource>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM resources WHERE id_key = $1"
        ))
        .bind(id.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Inserts or replaces; returns `true` when the resource did not exist before.
    pub async fn put(&self, r: &StoredResource) -> anyhow::Result<bool> {
        let body = serde_json::to_string(&r.body)?;
        let key = r.id.to_lowercase();
        let inserted = sqlx::query(
            "INSERT INTO resources (id_key, id, subscription, resource_group, type_key, name, scope_key, body, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id_key) DO NOTHING",
        )
        .bind(&key)
        .bind(&r.id)
        .bind(&r.subscription)
        .bind(&r.resource_group)
        .bind(r.resource_type.to_lowercase())
        .bind(&r.name)
        .bind(&r.scope)
        .bind(&body)
        .bind(&r.created_at)
        .bind(&r.updated_at)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if !inserted {
            sqlx::query("UPDATE resources SET body = $1, updated_at = $2 WHERE id_key = $3")
                .bind(&body)
                .bind(&r.updated_at)
                .bind(&key)
                .execute(&self.pool)
                .await?;
        }
        self.note_write();
        Ok(inserted)
    }

    /// Deletes one resource and its secrets; `true` when it existed.
    pub async fn delete(&self, id: &str) -> anyhow::Result<bool> {
        let key = id.to_lowercase();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM secrets WHERE resource_key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM resources WHERE id_key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.note_write();
        Ok(n.rows_affected() > 0)
    }

    /// Deletes a resource group and everything inside it in one transaction; returns how many
    /// resources went (the group included).
    pub async fn delete_resource_group(
        &self,
        subscription: &str,
        group: &str,
    ) -> anyhow::Result<u64> {
        let (sub, rg) = (subscription.to_lowercase(), group.to_lowercase());
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM secrets WHERE subscription = $1 AND resource_group = $2")
            .bind(&sub)
            .bind(&rg)
            .execute(&mut *tx)
            .await?;
        let n =
            sqlx::query("DELETE FROM resources WHERE subscription = $1 AND resource_group = $2")
                .bind(&sub)
                .bind(&rg)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        self.note_write();
        Ok(n.rows_affected())
    }

    /// Resources matching every given filter, ordered by id.
    pub async fn list(&self, f: &ListFilter<'_>) -> anyhow::Result<Vec<StoredResource>> {
        let mut sql = format!("SELECT {COLUMNS} FROM resources WHERE 1 = 1");
        let mut binds = Vec::new();
        for (col, val) in [
            ("subscription", f.subscription.map(str::to_lowercase)),
            ("resource_group", f.resource_group.map(str::to_lowercase)),
            ("type_key", f.resource_type.map(str::to_lowercase)),
        ] {
            if let Some(v) = val {
                binds.push(v);
                sql.push_str(&format!(" AND {col} = ${}", binds.len()));
            }
        }
        sql.push_str(" ORDER BY id_key");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The subscriptions that hold any resource (lower-cased), sorted.
    pub async fn subscriptions(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT subscription FROM resources WHERE subscription <> '' ORDER BY subscription",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::Row::try_get::<String, _>(r, 0)?))
            .collect()
    }

    /// Stores a write-only value that belongs to a resource (deleted with it).
    pub async fn put_secret(
        &self,
        r: &StoredResource,
        name: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO secrets (resource_key, name, subscription, resource_group, value) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (resource_key, name) DO UPDATE SET value = excluded.value",
        )
        .bind(r.id.to_lowercase())
        .bind(name)
        .bind(&r.subscription)
        .bind(&r.resource_group)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_secret(&self, resource_id: &str, name: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM secrets WHERE resource_key = $1 AND name = $2")
            .bind(resource_id.to_lowercase())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_secret(
        &self,
        resource_id: &str,
        name: &str,
    ) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM secrets WHERE resource_key = $1 AND name = $2")
            .bind(resource_id.to_lowercase())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    pub async fn put_operation(&self, op: &Operation) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO operations (id, subscription, resource_id, status, created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&op.id)
        .bind(op.subscription.to_lowercase())
        .bind(&op.resource_id)
        .bind(&op.status)
        .bind(crate::now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_operation(
        &self,
        subscription: &str,
        id: &str,
    ) -> anyhow::Result<Option<Operation>> {
        let row = sqlx::query("SELECT id, subscription, resource_id, status FROM operations WHERE id = $1 AND subscription = $2")
            .bind(id.to_lowercase())
            .bind(subscription.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| -> anyhow::Result<Operation> {
            Ok(Operation {
                id: r.try_get(0)?,
                subscription: r.try_get(1)?,
                resource_id: r.try_get(2)?,
                status: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Returns the stored setting, storing `default` first if there is none (first writer wins).
    pub async fn setting_or_init(&self, key: &str, default: &str) -> anyhow::Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(default)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

const COLUMNS: &str =
    "id, subscription, resource_group, type_key, name, scope_key, body, created_at, updated_at";

fn from_row(r: &AnyRow) -> anyhow::Result<StoredResource> {
    let body: String = r.try_get(6)?;
    let body: Value = serde_json::from_str(&body).context("stored resource body is not JSON")?;
    let resource_type = body.get("type").and_then(Value::as_str).map(str::to_owned);
    Ok(StoredResource {
        id: r.try_get(0)?,
        subscription: r.try_get(1)?,
        resource_group: r.try_get(2)?,
        resource_type: match resource_type {
            Some(t) => t,
            None => r.try_get(3)?,
        },
        name: r.try_get(4)?,
        scope: r.try_get(5)?,
        body,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}
