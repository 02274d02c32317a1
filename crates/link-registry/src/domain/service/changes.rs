//! The change feed, as a broker follows it: a replay from the revision it last saw (or a resync),
//! then every change as it commits, a heartbeat whenever the feed is quiet, and an end as soon as
//! the broker's key stops being valid or the registry shuts down.

use tokio::sync::{mpsc, watch};

use super::*;
use crate::domain::changes::FeedEvent;

/// How often a quiet feed sends a heartbeat, polls for changes (in case a wake-up was lost) and
/// checks the watcher's key again.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Most changes read at once.
const BATCH: u64 = 256;

impl Registry {
    /// Follows the feed from `from_revision` (0: from now) for the holder of `key`, a broker key.
    /// Events arrive on the receiver until it is dropped, the key is revoked or expires (a last
    /// `InvalidKey`), or the registry stops.
    pub async fn watch_changes(
        &self,
        key: SecretString,
        from_revision: i64,
    ) -> Result<mpsc::Receiver<Result<FeedEvent>>> {
        let caller = self.feed_caller(&key).await?;
        if from_revision < 0 {
            return Err(RegistryError::invalid(
                "from_revision",
                "from_revision must not be negative",
            ));
        }
        // Subscribed before reading, so no commit falls between the read and the wait.
        let wake = self.store.subscribe().await;
        let (head, oldest) = self.store.revisions().await?;
        let replayable = from_revision > 0
            && from_revision <= head
            && oldest.is_none_or(|oldest| from_revision >= oldest - 1);
        let start = if replayable { from_revision } else { head };
        let (events, receiver) = mpsc::channel(64);
        if !replayable {
            let _ = events.send(Ok(FeedEvent::Resync { revision: head })).await;
        }
        let registry = self.clone();
        tokio::spawn(async move { registry.follow(key, caller, start, wake, events).await });
        Ok(receiver)
    }

    async fn feed_caller(&self, key: &SecretString) -> Result<Caller> {
        let caller = self.authenticate(key.expose_secret()).await?;
        if caller.role != Role::Broker {
            return Err(caller.not_allowed());
        }
        Ok(caller)
    }

    /// Sends the changes after `last` as they commit: of the teams `caller` serves only (a
    /// broker key limited to teams hears of no other team's changes). A heartbeat follows a read
    /// that found nothing newer, so it vouches for the feed as of that read: a broker that hears
    /// it may trust its cache for its staleness bound from then, and no longer.
    async fn follow(
        self,
        key: SecretString,
        mut caller: Caller,
        mut last: i64,
        mut wake: watch::Receiver<i64>,
        events: mpsc::Sender<Result<FeedEvent>>,
    ) {
        let mut stopping = self.stopping.clone();
        let mut checked = Instant::now();
        let mut heartbeat_due = false;
        loop {
            if *stopping.borrow_and_update() {
                return;
            }
            wake.borrow_and_update();
            let batch = match self.store.changes_after(last, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = events.send(Err(e)).await;
                    return;
                }
            };
            let full = batch.len() as u64 == BATCH;
            for change in batch {
                last = change.revision;
                if !caller.sees(&change.scope.team_id) {
                    continue;
                }
                if events.send(Ok(FeedEvent::Change(change))).await.is_err() {
                    return;
                }
            }
            if checked.elapsed() >= HEARTBEAT {
                checked = Instant::now();
                match self.feed_caller(&key).await {
                    Ok(now) => caller = now,
                    Err(e) => {
                        let _ = events.send(Err(e)).await;
                        return;
                    }
                }
            }
            if full {
                continue;
            }
            if std::mem::take(&mut heartbeat_due)
                && events
                    .send(Ok(FeedEvent::Heartbeat { revision: last }))
                    .await
                    .is_err()
            {
                return;
            }
            tokio::select! {
                _ = wake.changed() => {}
                // Quiet for a while: read once more, then say so.
                () = tokio::time::sleep(HEARTBEAT) => heartbeat_due = true,
                Ok(()) = stopping.changed() => {
                    if *stopping.borrow() {
                        return;
                    }
                }
                () = events.closed() => return,
            }
        }
    }
}
