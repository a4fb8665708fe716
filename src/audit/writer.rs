//! The one task that writes the audit trail: it takes whatever is queued
//! (up to a batch), seals it onto the chain under the chain head's lock and
//! commits it in one transaction, so a burst of calls costs one commit and
//! no caller waits for the database.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{SHUTDOWN_RETRY, chain::AuditKeys};
use crate::{
    metrics::Metrics,
    store::{AuditRow, ChainHead, Store},
};

/// Most records in one transaction.
const MAX_BATCH: usize = 512;
/// The chain head goes to the log at most this often (and at shutdown):
/// a copy outside the database that a cut-short chain cannot match.
const HEAD_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    pub store: Store,
    pub keys: AuditKeys,
    pub chain_id: String,
    pub rx: mpsc::Receiver<AuditRow>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
    /// Whether a head that does not verify was reported already (once per
    /// process: after a change of key, every batch would say it again).
    pub head_reported: std::sync::atomic::AtomicBool,
}

pub(super) async fn run(mut w: Writer) {
    let genesis = w.keys.genesis(&w.chain_id);
    let mut last_logged: Option<Instant> = None;
    let mut head: Option<ChainHead> = None;
    loop {
        let first = tokio::select! {
            r = w.rx.recv() => r,
            _ = w.stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let batch = take_batch(&mut w, first);
        if let Some(h) = write(&w, &genesis, batch, None).await {
            if last_logged.is_none_or(|t| t.elapsed() >= HEAD_LOG_EVERY) {
                log_head(&h);
                last_logged = Some(Instant::now());
                head = None;
            } else {
                head = Some(h);
            }
        }
    }
    // Shutdown: nothing new is accepted; whatever was queued is written.
    w.rx.close();
    let deadline = Instant::now() + SHUTDOWN_RETRY;
    while let Ok(first) = w.rx.try_recv() {
        let batch = take_batch(&mut w, first);
        if let Some(h) = write(&w, &genesis, batch, Some(deadline)).await {
            head = Some(h);
        }
    }
    if let Some(h) = &head {
        log_head(h);
    }
    tracing::debug!(chain = %w.chain_id, "audit writer stopped");
}

fn take_batch(w: &mut Writer, first: AuditRow) -> Vec<AuditRow> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match w.rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    w.metrics
        .audit_queue_depth
        .set(w.rx.len().min(i64::MAX as usize) as i64);
    batch
}

fn log_head(h: &ChainHead) {
    tracing::info!(
        audit_chain = %h.chain_id,
        audit_seq = h.seq,
        audit_mac = %h.mac,
        "audit chain head"
    );
}

/// `batch` with a fresh id on every record whose id is empty or already
/// taken by an earlier record of the batch: the database would refuse the
/// whole batch for it, again at every retry, while the queue fills.
fn with_unique_ids(mut batch: Vec<AuditRow>) -> Vec<AuditRow> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    for row in &mut batch {
        if row.id.is_empty() || !seen.insert(row.id.clone()) {
            tracing::warn!(id = %row.id, "audit record without a unique id: given a new one");
            row.id = uuid::Uuid::now_v7().to_string();
            seen.insert(row.id.clone());
        }
    }
    batch
}

/// Writes one batch, retrying with backoff while the database refuses it
/// (the queue fills meanwhile, and its policy applies). Gives up only at
/// `deadline` (shutdown), saying how many records are lost.
async fn write(
    w: &Writer,
    genesis: &ChainHead,
    batch: Vec<AuditRow>,
    mut deadline: Option<Instant>,
) -> Option<ChainHead> {
    let batch = with_unique_ids(batch);
    let mut pause = Duration::from_millis(100);
    let count = batch.len();
    loop {
        let keys = &w.keys;
        let drafts = batch.clone();
        let sealed = w
            .store
            .audit_append(genesis, |head| {
                if !keys.head_is_authentic(head)
                    && !w
                        .head_reported
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    // Someone edited the head: say so now; verify names it.
                    tracing::error!(chain = %head.chain_id, seq = head.seq, "audit chain head does not verify: the audit table was edited, or the audit key changed (run `metamcp audit verify`)");
                }
                keys.seal(head, drafts)
            })
            .await;
        match sealed {
            Ok(head) => {
                w.metrics.audit_records.inc_by(count as u64);
                return Some(head);
            }
            Err(e) => {
                if deadline.is_none() && w.stop.is_cancelled() {
                    deadline = Some(Instant::now() + SHUTDOWN_RETRY);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    w.metrics.audit_dropped.inc_by(count as u64);
                    tracing::error!(error = %e, lost = count, "audit records could not be written before shutdown");
                    return None;
                }
                tracing::error!(error = %e, records = count, retry_in = ?pause, "writing audit records failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
