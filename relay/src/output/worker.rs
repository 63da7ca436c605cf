//! One worker of an output: takes batches from the output's queue, writes them, and reports a
//! batch done only once it is confirmed.
//!
//! - stdout and file: confirmed once written and flushed.
//! - devo and relay: a written batch waits in its connection's `unconfirmed` list. When the
//!   connection's unconfirmed bytes reach `confirm_bytes`, its oldest unconfirmed write reaches
//!   `confirm_interval_ms`, or it is idle or old (`idle_reconnect_secs`,
//!   `max_connection_age_secs`), the worker hands it to a closer task (confirm.rs) and opens a
//!   fresh connection for the next batch. At most one connection per worker is closing at a
//!   time, so the batches held in memory stay bounded (about twice `confirm_bytes` of wire
//!   bytes per worker, as compressed bodies).
//! - A connection that ends any other way (the peer closes, resets or sends a TLS alert, which
//!   the connection's reader reports at once; a write fails; the close is not answered) fails
//!   every batch written on it: they go back to this worker's resend queue, which is served
//!   before new batches, after the backoff.
//!
//! On shutdown it finishes the batch it is writing, closes its connections gracefully and
//! reports what the peer confirmed; the rest stays in the spool.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::confirm::{self, Unconfirmed};
use super::net::{classify, NetSink, PeerEnd};
use super::{Backoff, Job, OutputError, Sent, Sink, Worker, Written};
use crate::config::OutputSettings;
use crate::metrics::{ConfirmFailure, Event, OutputMetrics};
use crate::spool::Position;

/// A connection being closed in the background, with the batches written on it.
struct Closing {
    dest: String,
    batches: Vec<Written>,
    task: JoinHandle<Result<(), Unconfirmed>>,
}

type Outcome = (String, Vec<Written>, Result<(), Unconfirmed>);

impl Closing {
    async fn finish(mut self) -> Outcome {
        let r = (&mut self.task).await;
        self.finished(r)
    }

    /// The outcome, given what the task returned.
    fn finished(self, r: Result<Result<(), Unconfirmed>, tokio::task::JoinError>) -> Outcome {
        let outcome = r.unwrap_or_else(|e| {
            Err(Unconfirmed {
                why: ConfirmFailure::Write,
                reason: format!("the closing task failed: {e}"),
            })
        });
        (self.dest, self.batches, outcome)
    }
}

/// What woke an idle worker.
enum Wake {
    Job(Job),
    Stop,
    Closed(Outcome),
    PeerEnded(PeerEnd),
    Rotate,
}

struct Work {
    worker: Worker,
    output: String,
    close_timeout: Duration,
    done: mpsc::UnboundedSender<(u64, Position)>,
    stop: CancellationToken,
    backoff: Backoff,
    /// Batches to write again (their connection failed), in sequence order; served first.
    redo: VecDeque<Job>,
    closing: Option<Closing>,
}

pub(super) async fn work(
    worker: Worker,
    settings: OutputSettings,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    done: mpsc::UnboundedSender<(u64, Position)>,
    stop: CancellationToken,
) {
    let close_timeout = match &worker.sink {
        Sink::Net(n) => n.settings.close_timeout,
        Sink::Stream(_) => Duration::ZERO,
    };
    let mut w = Work {
        output: settings.name.clone(),
        worker,
        close_timeout,
        done,
        stop,
        backoff: Backoff::new(settings.backoff_initial, settings.backoff_max),
        redo: VecDeque::new(),
        closing: None,
    };
    w.run(&jobs).await;
}

impl Work {
    fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.worker.metrics.clone()
    }

    fn net(&self) -> Option<&NetSink> {
        match &self.worker.sink {
            Sink::Net(n) => Some(n),
            Sink::Stream(_) => None,
        }
    }

    fn net_mut(&mut self) -> Option<&mut NetSink> {
        match &mut self.worker.sink {
            Sink::Net(n) => Some(n),
            Sink::Stream(_) => None,
        }
    }

    async fn run(&mut self, jobs: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let job = match self.redo.pop_front() {
                Some(job) => job,
                None => match self.wait(jobs).await {
                    Wake::Job(job) => job,
                    Wake::Stop => break,
                    Wake::Closed(outcome) => {
                        self.closed(outcome).await;
                        continue;
                    }
                    Wake::PeerEnded(end) => {
                        let (why, reason) = end.failure();
                        if self.fail_conn(why, &reason) {
                            self.pause().await;
                        }
                        continue;
                    }
                    Wake::Rotate => {
                        self.rotate("confirm_interval reached").await;
                        continue;
                    }
                },
            };
            self.deliver(job).await;
        }
        self.shutdown().await;
    }

    /// Waits for a job, or for something to do about the connections meanwhile.
    async fn wait(&mut self, jobs: &Mutex<mpsc::Receiver<Job>>) -> Wake {
        let deadline = self.net().and_then(NetSink::confirm_deadline);
        let has_closing = self.closing.is_some();
        let closing = &mut self.closing;
        let stop = &self.stop;
        // The peer of a connection with unconfirmed writes is watched: its failure is acted
        // on at once, not at the next batch.
        let conn = match &mut self.worker.sink {
            Sink::Net(n) => n.conn.as_mut().filter(|c| !c.unconfirmed.is_empty()),
            Sink::Stream(_) => None,
        };
        let watch_peer = conn.is_some();
        tokio::select! {
            biased;
            _ = stop.cancelled() => Wake::Stop,
            r = async {
                match closing.as_mut() {
                    Some(c) => (&mut c.task).await,
                    None => std::future::pending().await,
                }
            }, if has_closing => match closing.take() {
                Some(c) => Wake::Closed(c.finished(r)),
                None => Wake::Rotate,
            },
            end = async {
                match conn {
                    Some(c) => c.wait_peer_end().await,
                    None => std::future::pending().await,
                }
            }, if watch_peer => Wake::PeerEnded(end),
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            }, if deadline.is_some() => Wake::Rotate,
            job = async { jobs.lock().await.recv().await } => match job {
                Some(job) => Wake::Job(job),
                None => Wake::Stop,
            },
        }
    }

    /// Writes one batch, retrying (after the backoff, on a fresh connection) until it is
    /// written or the worker stops.
    async fn deliver(&mut self, (seq, batch): Job) {
        let metrics = self.metrics();
        loop {
            if let Some(why) = self.net().and_then(|n| n.rotation_due(Instant::now())) {
                self.rotate(why).await;
            }
            if self.stop.is_cancelled() {
                return; // not written: it stays in the spool
            }
            match self.worker.deliver(&batch).await {
                Ok(sent) => {
                    self.written(Written { seq, batch, sent }).await;
                    return;
                }
                Err(e @ OutputError::Decode { .. }) => {
                    // Checked at ingest and checksummed in the spool: only a bug gets here.
                    // Resending cannot help; report it and move on.
                    metrics.record(Event::BatchSkipped {
                        output: &self.output,
                        error: &e,
                    });
                    let _ = self.done.send((seq, batch.end));
                    return;
                }
                Err(e) => {
                    let (why, reason) = match &e {
                        OutputError::Peer { why, reason, .. } => (*why, reason.clone()),
                        OutputError::Write { source, .. } => (classify(source), e.to_string()),
                        other => (ConfirmFailure::Write, other.to_string()),
                    };
                    self.fail_conn(why, &reason);
                    let stopping = self.stop.is_cancelled();
                    metrics.record(Event::DeliveryFailed {
                        output: &self.output,
                        phase: e.phase(),
                        error: &e,
                        attempt: self.backoff.attempts() + 1,
                        stopping,
                    });
                    if stopping || self.pause().await {
                        return;
                    }
                }
            }
        }
    }

    /// A batch was written: done at once for stdout and file; for a network output it waits
    /// for its connection's confirmation.
    async fn written(&mut self, w: Written) {
        let metrics = self.metrics();
        let output = self.output.clone();
        let Some(net) = self.net_mut() else {
            self.backoff.reset();
            self.confirmed(vec![w], false);
            return;
        };
        let Some(conn) = net.conn.as_mut() else {
            // Unreachable (a successful write had a connection); never lose the batch.
            self.requeue(vec![w]);
            return;
        };
        conn.record(w);
        metrics.output(&output).unconfirmed_batches.add(1);
        let now = Instant::now();
        net.prepare_spare(now);
        if let Some(why) = net.rotation_due(now) {
            self.rotate(why).await;
        }
    }

    /// Hands the current connection to a closer task; first waits for the previous one.
    async fn rotate(&mut self, why: &'static str) {
        let close_timeout = self.close_timeout;
        let Some(net) = self.net_mut() else { return };
        let Some(mut conn) = net.conn.take() else {
            return;
        };
        if let Some(previous) = self.closing.take() {
            self.closed(previous.finish().await).await;
        }
        let batches = std::mem::take(&mut conn.unconfirmed);
        tracing::debug!(output = %self.output, dest = %conn.dest, reason = why, batches = batches.len(), "closing the connection to confirm its writes");
        self.closing = Some(Closing {
            dest: conn.dest.clone(),
            batches,
            task: tokio::spawn(confirm::close(conn, close_timeout)),
        });
    }

    /// Acts on the outcome of a close.
    async fn closed(&mut self, (dest, batches, outcome): Outcome) {
        let metrics = self.metrics();
        let m = metrics.output(&self.output);
        match outcome {
            Ok(()) => {
                m.connections_confirmed.inc();
                tracing::debug!(output = %self.output, %dest, batches = batches.len(), "connection closed; its writes are confirmed");
                if !batches.is_empty() {
                    self.backoff.reset();
                    if let Some(net) = self.net_mut() {
                        net.trusted = true;
                    }
                }
                self.confirmed(batches, true);
            }
            Err(u) => {
                metrics.record(Event::CloseFailed {
                    output: &self.output,
                    dest: &dest,
                    reason: &u.reason,
                    idle: batches.is_empty(),
                });
                if batches.is_empty() {
                    return;
                }
                self.unconfirmed(u.why, &u.reason, &dest, batches);
                self.pause().await;
            }
        }
    }

    /// Drops the current connection after a failure; its batches go back for resending.
    /// Returns whether any batch was affected.
    fn fail_conn(&mut self, why: ConfirmFailure, reason: &str) -> bool {
        let Some(net) = self.net_mut() else {
            return false;
        };
        net.trusted = false;
        net.drop_spare();
        let Some(mut conn) = net.conn.take() else {
            return false;
        };
        let batches = std::mem::take(&mut conn.unconfirmed);
        let dest = conn.dest.clone();
        drop(conn);
        if batches.is_empty() {
            return false;
        }
        self.unconfirmed(why, reason, &dest, batches);
        true
    }

    /// Reports batches done.
    fn confirmed(&mut self, batches: Vec<Written>, held: bool) {
        let metrics = self.metrics();
        let m = metrics.output(&self.output);
        if held {
            m.unconfirmed_batches.add(-(batches.len() as i64));
        }
        for w in batches {
            count_delivered(m, w.sent);
            let _ = self.done.send((w.seq, w.batch.end));
        }
    }

    /// Batches whose connection was not confirmed: counted, logged, queued for resending.
    fn unconfirmed(
        &mut self,
        why: ConfirmFailure,
        reason: &str,
        dest: &str,
        batches: Vec<Written>,
    ) {
        self.metrics().record(Event::Unconfirmed {
            output: &self.output,
            dest,
            why,
            reason,
            batches: batches.len(),
            events: batches.iter().map(|w| w.sent.events).sum(),
        });
        if let Some(net) = self.net_mut() {
            net.trusted = false;
            net.drop_spare();
        }
        self.requeue(batches);
    }

    fn requeue(&mut self, batches: Vec<Written>) {
        self.redo
            .extend(batches.into_iter().map(|w| (w.seq, w.batch)));
        self.redo.make_contiguous().sort_by_key(|(seq, _)| *seq);
    }

    /// Waits out the backoff; returns true when the worker was stopped meanwhile.
    async fn pause(&mut self) -> bool {
        let metrics = self.metrics();
        let m = metrics.output(&self.output);
        let delay = self.backoff.next_delay();
        tracing::debug!(output = %self.output, retry_in_ms = delay.as_millis() as u64, "backing off");
        m.retrying.add(1);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.stop.cancelled() => true,
        };
        m.retrying.add(-1);
        stopped
    }

    /// Closes gracefully and confirms what the peer confirms; the rest stays in the spool.
    async fn shutdown(&mut self) {
        if let Some(previous) = self.closing.take() {
            self.closed(previous.finish().await).await;
        }
        let close_timeout = self.close_timeout;
        match &mut self.worker.sink {
            Sink::Stream(s) => {
                let _ = s.flush().await;
            }
            Sink::Net(n) => {
                let spare = n.take_spare().await;
                if let Some(mut conn) = n.conn.take() {
                    let batches = std::mem::take(&mut conn.unconfirmed);
                    let dest = conn.dest.clone();
                    let outcome = confirm::close(conn, close_timeout).await;
                    self.closed((dest, batches, outcome)).await;
                }
                if let Some(conn) = spare {
                    let _ = confirm::close(conn, close_timeout).await;
                }
            }
        }
        if !self.redo.is_empty() {
            tracing::info!(output = %self.output, batches = self.redo.len(), "stopping; unconfirmed batches stay in the spool");
        }
    }
}

fn count_delivered(m: &OutputMetrics, sent: Sent) {
    m.events_delivered.add(sent.events);
    m.bytes_delivered.add(sent.bytes);
    m.batches_delivered.inc();
}
