//! Reads off the event loop: a thread of its own with its own
//! [`BlobReader`], for async code that must never wait for the disk (the
//! server's sessions run on the executor with every other connection).
//!
//! Each request reads a run of blobs after a cursor and answers on a
//! channel of its own. A caller has at most one request out at a time (the
//! server's connections each do), so the queue is bounded by the callers.

use std::thread::JoinHandle;

use smol::channel::{self, Receiver, Sender};

use super::{Blob, BlobReader, Error, Result};

/// Blobs after a cursor, oldest first.
pub type Run = Vec<(u64, Box<Blob>)>;

struct Job {
    after: u64,
    limit: usize,
    reply: Sender<Result<Run>>,
}

/// A [`BlobReader`] on a thread of its own.
///
/// Dropping it stops the thread once the requests already queued are
/// answered.
#[derive(Debug)]
pub struct ReadThread {
    tx: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("after", &self.after)
            .field("limit", &self.limit)
            .finish()
    }
}

impl ReadThread {
    /// Starts the thread, reading with `reader`.
    pub fn start(reader: BlobReader) -> Result<Self> {
        let (tx, rx) = channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("blob-store-reader".into())
            .spawn(move || serve(&reader, &rx))
            .map_err(Error::Thread)?;
        Ok(ReadThread {
            tx,
            thread: Some(thread),
        })
    }

    /// Up to `limit` blobs after `after` (see [`BlobReader::read_after`]),
    /// read on the thread.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Run>> + Send + 'static + use<> {
        let tx = self.tx.clone();
        async move {
            let (reply, answer) = channel::bounded(1);
            tx.send(Job {
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
            answer.recv().await.map_err(|_| Error::Closed)?
        }
    }
}

impl Drop for ReadThread {
    fn drop(&mut self) {
        self.tx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(reader: &BlobReader, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv_blocking() {
        // The asker may have gone; nothing to do about it.
        let _ = job.reply.try_send(reader.read_after(job.after, job.limit));
    }
}
