//! Storage on etcd v3: reads at a revision, and writes as transactions with preconditions.
//!
//! Every write is one etcd transaction: the object write together with the allocations it claims or
//! releases (Service IPs and node ports), so a write is either done entirely or not at all.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

/// A failure of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested revision has been compacted away.
    #[error("the requested revision has been compacted")]
    Compacted,
    /// etcd could not be reached or failed.
    #[error("etcd: {0}")]
    Etcd(String),
}

impl From<etcd_client::Error> for StorageError {
    fn from(e: etcd_client::Error) -> Self {
        let text = e.to_string();
        if text.contains("compacted") {
            StorageError::Compacted
        } else {
            StorageError::Etcd(text)
        }
    }
}

impl From<StorageError> for atoll_api::ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted => {
                atoll_api::ApiError::gone("The resourceVersion for the provided list is too old.")
            }
            StorageError::Etcd(m) => {
                atoll_api::ApiError::unavailable(format!("storage is not available: {m}"))
            }
        }
    }
}

/// One stored key with its value and the revision that last modified it.
#[derive(Debug, Clone)]
pub struct Kv {
    /// Full etcd key.
    pub key: String,
    /// Stored bytes.
    pub value: Vec<u8>,
    /// `mod_revision`: the object's resourceVersion.
    pub revision: i64,
}

impl Kv {
    fn from_etcd(kv: &etcd_client::KeyValue) -> Self {
        Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }
    }
    fn take(kv: etcd_client::KeyValue) -> Self {
        let revision = kv.mod_revision();
        let (key, value) = kv.into_key_value();
        let key = String::from_utf8(key)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Kv {
            key,
            value,
            revision,
        }
    }
}

/// How a key range changed after a revision, as seen at the current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeState {
    /// The current revision the counts were taken at.
    pub revision: i64,
    /// Keys in the range now.
    pub count: i64,
    /// Whether no key in the range was written after the given revision.
    pub unchanged: bool,
}

/// Keys claimed (created, must not exist) and released (deleted) in the same transaction as a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Keys to create, with the value to store; the write fails if any exists.
    pub claim: Vec<(String, String)>,
    /// Keys to delete.
    pub release: Vec<String>,
    /// Keys that must still be at this `mod_revision` (0: must not exist), such as the namespace an
    /// object is created in; when one moved the write fails as [`Outcome::Raced`].
    pub unchanged: Vec<(String, i64)>,
}

/// The write an object undergoes.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create; fails if the key exists.
    Create(Bytes),
    /// Replace; fails unless the stored revision is `revision`.
    Update {
        /// New bytes.
        value: Bytes,
        /// Expected `mod_revision`.
        revision: i64,
    },
    /// Delete; fails unless the stored revision is `revision`.
    Delete {
        /// Expected `mod_revision`.
        revision: i64,
    },
}

/// What became of a write.
#[derive(Debug)]
pub enum Outcome {
    /// Written at this revision.
    Done(i64),
    /// Create: the key exists (current value given).
    Exists(Kv),
    /// Update/delete: the key does not exist.
    Missing,
    /// Update/delete: the key was changed since (current value given).
    Changed(Kv),
    /// A claimed key is already taken; its current value is the holder.
    Taken(String, String),
    /// The state moved between the comparison and the read that explains it: try again.
    Raced,
}

/// A page of a range read.
#[derive(Debug)]
pub struct Page {
    /// The keys read.
    pub kvs: Vec<Kv>,
    /// The revision the read was served at.
    pub revision: i64,
    /// Whether more keys follow in the range.
    pub more: bool,
}

/// The etcd store, shared by all requests (cheap to clone).
#[derive(Clone)]
pub struct Store {
    client: Client,
}

/// Largest etcd response accepted (a page of up to 1000 objects of up to 1.5 MiB each fits easily
/// in the common case; etcd itself limits values to 1.5 MiB).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The first key after every key with the given prefix.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// Connects to the etcd endpoints (`http://host:port`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StorageError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Store { client })
    }

    /// The etcd client, for watches.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads one key (linearizable).
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        let resp = self.client.kv_client().get(key, None).await?;
        Ok(resp.kvs().first().map(Kv::from_etcd))
    }

    /// The store's current revision (a linearizable read of nothing).
    pub async fn current_revision(&self) -> Result<i64, StorageError> {
        let resp = self
            .client
            .kv_client()
            .get("/registry/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Reads keys in `[start, end)` at `revision` (0 = current), at most `limit` (0 = all).
    pub async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
    ) -> Result<Page, StorageError> {
        let mut opts = GetOptions::new().with_range(end.to_vec());
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        // A page of large objects can exceed tonic's default 4 MiB message limit.
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let resp = kv.get(start.to_vec(), Some(opts)).await?;
        let mut resp = resp;
        let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let more = resp.more();
        Ok(Page {
            kvs: resp.take_kvs().into_iter().map(Kv::take).collect(),
            // A read at a fixed revision answers with the current one in its header: report the one asked for.
            revision: if revision > 0 { revision } else { header_rev },
            more,
        })
    }

    /// In one linearizable read: how many keys `[start, end)` holds, and whether any was written after
    /// `after`. With none written after `after` and the same count as at `after`, the range is unchanged
    /// since then (a delete lowers the count; a create or update shows as written).
    pub async fn range_state(
        &self,
        start: &[u8],
        end: &[u8],
        after: i64,
    ) -> Result<RangeState, StorageError> {
        // A compare over a range holds when it holds for every key in it (and for an empty range).
        let unchanged = Compare::mod_revision(start.to_vec(), CompareOp::Less, after + 1)
            .with_range(end.to_vec());
        let count = || {
            TxnOp::get(
                start.to_vec(),
                Some(GetOptions::new().with_range(end.to_vec()).with_count_only()),
            )
        };
        let txn = Txn::new()
            .when([unchanged])
            .and_then([count()])
            .or_else([count()]);
        let resp = self.client.kv_client().txn(txn).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let count = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(g)) => g.count(),
            _ => {
                return Err(StorageError::Etcd(
                    "unexpected answer to a count transaction".into(),
                ));
            }
        };
        Ok(RangeState {
            revision,
            count,
            unchanged: resp.succeeded(),
        })
    }

    /// Keys (without values) under a prefix.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let resp = self
            .client
            .kv_client()
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// Writes `key` as one transaction together with `claims`.
    pub async fn write(
        &self,
        key: &str,
        write: Write,
        claims: &Claims,
    ) -> Result<Outcome, StorageError> {
        let mut when = vec![];
        let mut then = vec![];
        match &write {
            Write::Create(value) => {
                when.push(Compare::create_revision(key, CompareOp::Equal, 0));
                then.push(TxnOp::put(key, value.to_vec(), None));
            }
            Write::Update { value, revision } => {
                when.push(Compare::mod_revision(key, CompareOp::Equal, *revision));
                then.push(TxnOp::put(key, value.to_vec(), None));
            }
            Write::Delete { revision } => {
                when.push(Compare::mod_revision(key, CompareOp::Equal, *revision));
                then.push(TxnOp::delete(key, None));
            }
        }
        let mut otherwise = vec![TxnOp::get(key, None)];
        for (k, v) in &claims.claim {
            when.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
            then.push(TxnOp::put(k.as_str(), v.as_str(), None));
            otherwise.push(TxnOp::get(k.as_str(), None));
        }
        for k in &claims.release {
            then.push(TxnOp::delete(k.as_str(), None));
        }
        for (k, revision) in &claims.unchanged {
            when.push(Compare::mod_revision(
                k.as_str(),
                CompareOp::Equal,
                *revision,
            ));
        }
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let resp = self.client.kv_client().txn(txn).await?;
        if resp.succeeded() {
            return Ok(Outcome::Done(
                resp.header().map(|h| h.revision()).unwrap_or(0),
            ));
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(Kv::from_etcd),
            _ => None,
        });
        let current = gets.next().flatten();
        match (&write, current) {
            (Write::Create(_), Some(kv)) => return Ok(Outcome::Exists(kv)),
            (Write::Update { .. } | Write::Delete { .. }, None) => return Ok(Outcome::Missing),
            (Write::Update { revision, .. } | Write::Delete { revision }, Some(kv))
                if kv.revision != *revision =>
            {
                return Ok(Outcome::Changed(kv));
            }
            _ => {}
        }
        for ((k, _), held) in claims.claim.iter().zip(gets) {
            if let Some(kv) = held {
                return Ok(Outcome::Taken(
                    k.clone(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                ));
            }
        }
        Ok(Outcome::Raced)
    }

    /// Compacts history before `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.client.kv_client().compact(revision, None).await?;
        Ok(())
    }
}

/// Compacts etcd every `interval` to the revision seen one interval earlier, as the Kubernetes API
/// server does, so history stays bounded while watchers have an interval to catch up.
pub async fn run_compactor(store: Store, interval: Duration) {
    let mut previous: Option<i64> = None;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Some(rev) = previous.take() {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted etcd"),
                Err(e) => tracing::warn!(revision = rev, "etcd compaction failed: {e}"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
