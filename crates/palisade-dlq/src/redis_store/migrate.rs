//! Moving entries of the old layout (one string key `palisade:dlq:{q}:e:<id>` per entry) into
//! the queue's `entries` hash, before a store's first operation. See the module documentation.

use redis::Value;

use super::RedisStore;
use super::reply::{number, text};
use super::scripts::{Key, SCRIPTS};
use crate::store::StoreError;

/// Ids `pending.lua` examines per call.
const SCAN_BATCH: u64 = 1000;

/// Old keys one `migrate.lua` call moves (each is a declared key of the call).
const MOVE_BATCH: usize = 500;

impl RedisStore {
    /// Moves every entry of the old layout into `entries` (and logs how many). One script
    /// call when there is nothing to move (the usual case); otherwise a scan of `all` and one
    /// call per batch of old keys. Idempotent: processes starting together may all run it.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut cursor = String::new();
        let mut moved = 0u64;
        loop {
            let (next, missing) = self.pending(&cursor).await?;
            for batch in missing.chunks(MOVE_BATCH) {
                moved += self.move_batch(batch).await?;
            }
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        if moved > 0 {
            tracing::info!(target: "palisade::dlq", queue = %self.inner.queue, moved,
                "moved dead-letter entries of the old layout (one key per entry) into {}",
                self.inner.keys.get(Key::Entries));
            self.wait_replicas().await?;
        }
        Ok(())
    }

    /// One scan step: the next cursor (empty at the end) and the ids without a field.
    async fn pending(&self, cursor: &str) -> Result<(String, Vec<String>), StoreError> {
        let script = &SCRIPTS.pending;
        let mut inv = self.invocation(script);
        inv.arg(cursor).arg(SCAN_BATCH);
        let v = self.run_unmigrated(script, &inv).await?;
        let parsed = match &v {
            Value::Array(items) => match items.as_slice() {
                [next, Value::Array(ids)] => {
                    text(next).zip(ids.iter().map(text).collect::<Option<Vec<String>>>())
                }
                _ => None,
            },
            _ => None,
        };
        parsed.ok_or_else(|| self.unexpected(script, &v))
    }

    /// Moves the old keys of `ids` (zero-padded) that exist; returns how many moved.
    async fn move_batch(&self, ids: &[String]) -> Result<u64, StoreError> {
        let script = &SCRIPTS.migrate;
        let mut inv = self.invocation(script);
        for id in ids {
            inv.key(self.inner.keys.old_entry(id));
        }
        for id in ids {
            inv.arg(id);
        }
        let v = self.run_unmigrated(script, &inv).await?;
        number(&v).ok_or_else(|| self.unexpected(script, &v))
    }
}
