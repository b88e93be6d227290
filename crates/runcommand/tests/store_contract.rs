//! The in-memory store meets the same contract the server's SQL stores must meet.

use sandpool_runcommand::testing::{store_contract_tests, MemoryStore};

#[tokio::test]
async fn memory_store_meets_the_contract() {
    store_contract_tests(&MemoryStore::new()).await;
}
