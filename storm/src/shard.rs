//! `run_sharded`: the emulated clients of a `--tftp-only` storm spread over
//! threads, each a single-threaded tokio runtime with its own share, so
//! that emulating clients costs as little CPU as it can on a machine the
//! server under test shares.

use crate::error::StormError;

/// One emulated client, ready to run on any thread.
pub(crate) type ClientTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Run `clients` (futures) on `threads` threads, each a single-threaded
/// runtime with its share (round-robin); returns when all have finished.
/// Sockets a client opens belong to its thread's event loop: a wake-up
/// never crosses threads, and no idle thread is woken to steal work.
pub(crate) async fn run_sharded(
    clients: Vec<ClientTask>,
    threads: usize,
) -> Result<(), StormError> {
    let threads = threads.max(1).min(clients.len().max(1));
    let mut shards: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        if let Some(shard) = shards.get_mut(i % threads) {
            shard.push(c);
        }
    }
    let mut done = Vec::new();
    for (k, shard) in shards.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name(format!("storm-{k}"))
            .spawn(move || {
                let r = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| {
                        rt.block_on(async move {
                            let mut set = tokio::task::JoinSet::new();
                            for c in shard {
                                set.spawn(c);
                            }
                            while set.join_next().await.is_some() {}
                        })
                    });
                let _ = tx.send(r);
            })?;
        done.push(rx);
    }
    for rx in done {
        rx.await.map_err(|_| StormError::ThreadLost)??;
    }
    Ok(())
}
