//! Copying a container's log file to a client: records are read as they are complete, filtered by
//! [`crate::logs::Filter`] and sent chunk by chunk; with `follow`, the file is polled for growth
//! until the container stops running (then the rest is read) or the client goes away.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lookup::Containers;
use crate::logs::Filter;

/// How often a followed file is checked for new records.
pub const POLL: Duration = Duration::from_millis(100);
/// How often a followed container is checked for still running.
pub const CHECK: Duration = Duration::from_secs(1);
/// How much is read from the file at a time.
const CHUNK: usize = 64 * 1024;

/// Which container to follow, and where to ask whether it still runs.
pub struct Follow<C> {
    /// The node's containers.
    pub containers: Arc<C>,
    /// The container's runtime ID.
    pub id: String,
}

async fn send(tx: &mpsc::Sender<Bytes>, out: Vec<u8>) -> bool {
    out.is_empty() || tx.send(Bytes::from(out)).await.is_ok()
}

/// Sends the records of `file` from its current offset through `filter` to `tx`, following the
/// container when `follow` says which one. Ends at the end of the file (not following), when the
/// container stopped and its last records are sent, at the byte limit, or when `tx` closes.
pub async fn copy<C: Containers>(
    mut file: tokio::fs::File,
    mut filter: Filter,
    follow: Option<Follow<C>>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut running = follow.is_some();
    let mut checked = Instant::now();
    loop {
        let n = match file.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("reading a container log: {e}");
                return;
            }
        };
        if n > 0 {
            pending.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut start = 0;
            while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                if let Err(e) = filter.push(&pending[start..start + i], &mut out) {
                    tracing::debug!("skipping a line of a container log: {e}");
                }
                start += i + 1;
                if filter.is_full() {
                    break;
                }
            }
            pending.drain(..start);
            if !send(&tx, out).await || filter.is_full() {
                return;
            }
            continue;
        }
        if !running {
            // The end: an unfinished last record counts as written, open lines are flushed.
            let mut out = Vec::new();
            if !pending.is_empty() {
                let _ = filter.push(&pending, &mut out);
            }
            filter.finish(&mut out);
            send(&tx, out).await;
            return;
        }
        if let Some(f) = &follow
            && checked.elapsed() >= CHECK
        {
            checked = Instant::now();
            match f.containers.running(&f.id).await {
                // Read once more to the end: the last output may have come after the last read.
                Ok(false) => {
                    running = false;
                    continue;
                }
                Ok(true) => {}
                Err(e) => tracing::warn!("checking whether container {} runs: {e}", f.id),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
        }
    }
}
