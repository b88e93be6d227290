//! The session store contract, against the in-memory store — and proof that the contract test
//! catches a store that breaks it.

use std::sync::Arc;

use async_trait::async_trait;
use sandpool_pools::testing::store_contract_tests;
use sandpool_pools::{
    ExecutionRecord, MemoryStore, PoolKey, SessionRecord, SessionStore, StoreResult,
};

#[tokio::test]
async fn memory_store_meets_the_contract() {
    store_contract_tests(Arc::new(MemoryStore::new())).await;
}

/// A store with one classic bug: inserting an execution id twice overwrites the first one.
struct OverwritingStore(MemoryStore);

#[async_trait]
impl SessionStore for OverwritingStore {
    async fn upsert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.0.upsert_session(s).await
    }
    async fn delete_session(&self, pool: &PoolKey, identifier: &str) -> StoreResult<bool> {
        self.0.delete_session(pool, identifier).await
    }
    async fn list_sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        self.0.list_sessions().await
    }
    async fn insert_execution(&self, e: &ExecutionRecord) -> StoreResult<bool> {
        if !self.0.insert_execution(e).await? {
            self.0.update_execution(e).await?;
        }
        Ok(true)
    }
    async fn update_execution(&self, e: &ExecutionRecord) -> StoreResult<bool> {
        self.0.update_execution(e).await
    }
    async fn get_execution(
        &self,
        pool: &PoolKey,
        identifier: &str,
        id: &str,
    ) -> StoreResult<Option<ExecutionRecord>> {
        self.0.get_execution(pool, identifier, id).await
    }
    async fn fail_running_executions(&self, reason: &str) -> StoreResult<u64> {
        self.0.fail_running_executions(reason).await
    }
    async fn prune_executions(
        &self,
        ended_before: time::OffsetDateTime,
        keep: u32,
    ) -> StoreResult<u64> {
        self.0.prune_executions(ended_before, keep).await
    }
}

#[tokio::test]
async fn contract_test_rejects_a_broken_store() {
    let broken = Arc::new(OverwritingStore(MemoryStore::new()));
    let outcome = tokio::spawn(store_contract_tests(broken)).await;
    assert!(
        outcome.is_err_and(|e| e.is_panic()),
        "the contract test must fail for a store that overwrites duplicate executions"
    );
}
