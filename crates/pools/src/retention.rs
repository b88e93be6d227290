//! Bounded execution history: finished execution records are deleted once older than the
//! manager's retention, and of each session all but the newest `execution_history` go.
//! Azure keeps records with their session; a session that lives for weeks and runs a command a
//! second would otherwise fill the disk with up to 2 × 16 MiB of output per record.

use std::sync::Weak;

use tokio_util::sync::CancellationToken;

use crate::manager::{now, Inner};

/// Prunes every `prune_interval` until the manager is gone or shut down. A store error is
/// logged and tried again next round: the records are only a bit older then.
pub(crate) async fn prune_loop(inner: Weak<Inner>, cancel: CancellationToken) {
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.config.prune_interval,
            None => return,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        prune_once(&inner).await;
    }
}

pub(crate) async fn prune_once(inner: &Inner) {
    let cfg = &inner.config;
    // A retention longer than the calendar allows keeps everything.
    let cutoff = time::Duration::try_from(cfg.execution_retention)
        .ok()
        .and_then(|age| now().checked_sub(age))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    match inner
        .store
        .prune_executions(cutoff, cfg.execution_history)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(records = n, "pruned execution records"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "pruning execution records"),
    }
}
