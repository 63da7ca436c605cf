//! The relay's telemetry: every metric declared once as a [`Metric`] (name, help, labels),
//! values kept in atomics (ingest and delivery touch them per batch, so no lock), the
//! Prometheus text exposition for `GET /metrics` written by [`Exposition`], and the outcomes
//! that are both logged and counted as one typed [`Event`], so a count never exists without
//! its log line.
//!
//! The set is fixed at start (outputs are known from the config). It does no I/O besides
//! logging.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_common::telemetry::{Exposition, Metric};

use crate::spool::Position;

const BATCHES_ACCEPTED: Metric = Metric::counter(
    "sluice_relay_batches_accepted_total",
    "Batches stored in the spool (answered 200, not duplicate).",
    &[],
);
const BATCHES_DUPLICATE: Metric = Metric::counter(
    "sluice_relay_batches_duplicate_total",
    "Batches whose idempotency key was already stored.",
    &[],
);
const BATCHES_REFUSED: Metric = Metric::counter(
    "sluice_relay_batches_refused_total",
    "Batches refused, by reason.",
    &["reason"],
);
const EVENTS_ACCEPTED: Metric = Metric::counter(
    "sluice_relay_events_accepted_total",
    "Events stored in the spool.",
    &[],
);
const BYTES_ACCEPTED: Metric = Metric::counter(
    "sluice_relay_bytes_accepted_total",
    "Compressed batch bytes stored in the spool.",
    &[],
);
const SPOOL_BYTES: Metric = Metric::gauge(
    "sluice_relay_spool_bytes",
    "Bytes of segment files on disk.",
    &[],
);
const SPOOL_MAX_BYTES: Metric = Metric::gauge(
    "sluice_relay_spool_max_bytes",
    "The spool's configured maximum.",
    &[],
);
const SPOOL_SEGMENTS: Metric =
    Metric::gauge("sluice_relay_spool_segments", "Segment files on disk.", &[]);
const SPOOL_CORRUPT_RECORDS: Metric = Metric::counter(
    "sluice_relay_spool_corrupt_records_total",
    "Torn or corrupt spool records detected and skipped.",
    &[],
);
const SPOOL_FULL: Metric = Metric::counter(
    "sluice_relay_spool_full_total",
    "Appends refused because the spool was full.",
    &[],
);
const SPOOL_SKIPPED_RANGES: Metric = Metric::counter(
    "sluice_relay_spool_skipped_ranges_total",
    "Ranges of spool bytes skipped as corrupt or cut off as a torn tail.",
    &[],
);
const SPOOL_SKIPPED_BYTES: Metric = Metric::counter(
    "sluice_relay_spool_skipped_bytes_total",
    "Spool bytes skipped as corrupt or cut off as a torn tail.",
    &[],
);
const SPOOL_LOST_SEGMENTS: Metric = Metric::counter(
    "sluice_relay_spool_lost_segments_total",
    "Spool segments that vanished or were truncated below their durable end.",
    &[],
);
const SPOOL_KEYS_FORGOTTEN: Metric = Metric::counter(
    "sluice_relay_spool_keys_forgotten_total",
    "Idempotency keys forgotten because their batch could not be read back.",
    &[],
);
const EVENTS_DELIVERED: Metric = Metric::counter(
    "sluice_relay_events_delivered_total",
    "Events delivered: flushed (stdout, file), or confirmed by a graceful close the peer answered (devo, relay).",
    &["output"],
);
const BYTES_DELIVERED: Metric = Metric::counter(
    "sluice_relay_bytes_delivered_total",
    "Bytes delivered (as on the wire), counted as events are.",
    &["output"],
);
const BATCHES_DELIVERED: Metric = Metric::counter(
    "sluice_relay_batches_delivered_total",
    "Batches delivered, counted as events are.",
    &["output"],
);
const OUTPUT_CONNECTIONS_OPEN: Metric = Metric::gauge(
    "sluice_relay_output_connections_open",
    "Open connections of the output.",
    &["output"],
);
const OUTPUT_CONNECTS: Metric = Metric::counter(
    "sluice_relay_output_connects_total",
    "Connections established by the output.",
    &["output"],
);
const OUTPUT_RETRYING: Metric = Metric::gauge(
    "sluice_relay_output_retrying",
    "Workers of the output currently backing off after an error.",
    &["output"],
);
const OUTPUT_RATE_LIMITED: Metric = Metric::counter(
    "sluice_relay_output_rate_limited_total",
    "Times the output waited for its rate limit.",
    &["output"],
);
const OUTPUT_ERRORS: Metric = Metric::counter(
    "sluice_relay_output_errors_total",
    "Output errors, by phase (connect, handshake, write, close, decode).",
    &["output", "phase"],
);
const OUTPUT_CONNECTIONS_CONFIRMED: Metric = Metric::counter(
    "sluice_relay_output_connections_confirmed_total",
    "Connections closed gracefully with every write on them confirmed by the peer.",
    &["output"],
);
const OUTPUT_BATCHES_RESENT: Metric = Metric::counter(
    "sluice_relay_output_batches_resent_total",
    "Batches written on a connection that was not confirmed, hence resent.",
    &["output"],
);
const OUTPUT_UNCONFIRMED_BATCHES: Metric = Metric::gauge(
    "sluice_relay_output_unconfirmed_batches",
    "Batches written and awaiting their connection's confirmation (held in memory).",
    &["output"],
);
const OUTPUT_CONFIRM_FAILURES: Metric = Metric::counter(
    "sluice_relay_output_confirm_failures_total",
    "Connections with unconfirmed writes that ended otherwise than by a graceful close, by reason (peer_closed, reset, tls, timeout, write).",
    &["output", "reason"],
);

const CHANNEL_CONNECTIONS_OPEN: Metric = Metric::gauge(
    "sluice_relay_channel_connections_open",
    "Channel connections open now (at most listen.max_connections).",
    &[],
);
const CHANNEL_CONNECTIONS: Metric = Metric::counter(
    "sluice_relay_channel_connections_total",
    "Channel connections accepted.",
    &[],
);
const CHANNEL_AT_CAP: Metric = Metric::counter(
    "sluice_relay_channel_at_cap_total",
    "Times a connection came with listen.max_connections open: the longest-idle one was closed for it, or, every one busy with a request, it waited.",
    &[],
);
const CHANNEL_REAPED: Metric = Metric::counter(
    "sluice_relay_channel_reaped_total",
    "Channel connections closed by the relay, by reason (header_timeout, idle, body_timeout, evicted: the longest-idle one, to make room at the cap).",
    &["reason"],
);
const CHANNEL_BODY_BUDGET: Metric = Metric::gauge(
    "sluice_relay_channel_body_budget_bytes",
    "Bytes of request bodies held now (read or being stored), counted in KiB steps.",
    &[],
);

/// Why the relay closed a channel connection; the `reason` label of
/// `sluice_relay_channel_reaped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaped {
    HeaderTimeout,
    Idle,
    BodyTimeout,
    Evicted,
}

impl Reaped {
    pub(crate) const ALL: [Reaped; 4] = [
        Reaped::HeaderTimeout,
        Reaped::Idle,
        Reaped::BodyTimeout,
        Reaped::Evicted,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reaped::HeaderTimeout => "header_timeout",
            Reaped::Idle => "idle",
            Reaped::BodyTimeout => "body_timeout",
            Reaped::Evicted => "evicted",
        }
    }
}

/// The channel listener's own figures (connections, not batches).
#[derive(Debug, Default)]
pub(crate) struct ChannelMetrics {
    pub(crate) connections_open: Gauge,
    pub(crate) connections: Counter,
    pub(crate) at_cap: Counter,
    pub(crate) reaped: [Counter; 4],
    pub(crate) body_budget_bytes: Gauge,
}

impl ChannelMetrics {
    fn render(&self, e: &mut Exposition) {
        e.sample(&CHANNEL_CONNECTIONS_OPEN, &[], self.connections_open.get());
        e.sample(&CHANNEL_CONNECTIONS, &[], self.connections.get());
        e.sample(&CHANNEL_AT_CAP, &[], self.at_cap.get());
        for r in Reaped::ALL {
            e.sample(&CHANNEL_REAPED, &[r.label()], self.reaped[r as usize].get());
        }
        e.sample(&CHANNEL_BODY_BUDGET, &[], self.body_budget_bytes.get());
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicI64);

impl Gauge {
    pub(crate) fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a batch was refused; the `reason` label of `sluice_relay_batches_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refusal {
    BadRequest,
    Unauthorized,
    TooLarge,
    SpoolFull,
    Unavailable,
    Internal,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 6] = [
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::TooLarge,
        Refusal::SpoolFull,
        Refusal::Unavailable,
        Refusal::Internal,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::Unauthorized => "unauthorized",
            Refusal::TooLarge => "too_large",
            Refusal::SpoolFull => "spool_full",
            Refusal::Unavailable => "unavailable",
            Refusal::Internal => "internal",
        }
    }
}

/// The phase of an output error; the `phase` label of `sluice_relay_output_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Connect,
    Handshake,
    Write,
    Close,
    Decode,
}

impl Phase {
    pub(crate) const ALL: [Phase; 5] = [
        Phase::Connect,
        Phase::Handshake,
        Phase::Write,
        Phase::Close,
        Phase::Decode,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Handshake => "handshake",
            Phase::Write => "write",
            Phase::Close => "close",
            Phase::Decode => "decode",
        }
    }
}

/// Why a connection's writes were not confirmed; the `reason` label of
/// `sluice_relay_output_confirm_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfirmFailure {
    /// The peer closed (EOF, or TLS close_notify) before our close.
    PeerClosed,
    /// A TCP reset, or bytes (our FIN included) the peer never acknowledged.
    Reset,
    /// A TLS alert (e.g. a late refusal of the client certificate) or a TCP close without
    /// close_notify.
    Tls,
    /// The peer did not answer our close within `close_timeout_ms`.
    Timeout,
    /// A write, flush or the close itself failed or timed out on our side.
    Write,
}

impl ConfirmFailure {
    pub(crate) const ALL: [ConfirmFailure; 5] = [
        ConfirmFailure::PeerClosed,
        ConfirmFailure::Reset,
        ConfirmFailure::Tls,
        ConfirmFailure::Timeout,
        ConfirmFailure::Write,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConfirmFailure::PeerClosed => "peer_closed",
            ConfirmFailure::Reset => "reset",
            ConfirmFailure::Tls => "tls",
            ConfirmFailure::Timeout => "timeout",
            ConfirmFailure::Write => "write",
        }
    }
}

/// How a segment's batches were lost; each is one `sluice_relay_spool_lost_segments_total`.
pub(crate) enum SegmentLoss<'a> {
    /// Missing at start although not every output had delivered it.
    MissingAtStart,
    /// Deleted while the relay ran.
    Vanished { path: &'a Path, bytes: u64 },
    /// Cut below its durable end while the relay ran.
    Truncated {
        path: &'a Path,
        durable_end: u64,
        file_size: u64,
    },
}

/// Forgotten keys logged one per line per event; the rest are counted in the summary line.
const LOG_KEYS: usize = 100;

/// An outcome the relay both logs and counts, given to [`Metrics::record`].
pub(crate) enum Event<'a> {
    /// A batch answered other than 200 (logged at debug: the producer is told why).
    Refused {
        why: Refusal,
        status: u16,
        message: &'a str,
    },
    /// A batch stored in the spool (answered 200).
    Stored { events: u64, bytes: u64 },
    /// A batch whose idempotency key was stored before (answered 200, not stored again).
    Duplicate,
    /// An append refused because the spool is full (the batch is then refused 429).
    SpoolFull,
    /// A range of a segment skipped as corrupt, or cut off as a torn tail.
    SkippedRange {
        path: &'a Path,
        segment: u64,
        range: (u64, u64),
        reason: &'a str,
        what: &'a str,
    },
    /// A segment whose undelivered batches are lost.
    SegmentLost { segment: u64, how: SegmentLoss<'a> },
    /// Idempotency keys forgotten because their batch cannot be read back: (key, events,
    /// where its record was).
    KeysForgotten {
        why: &'a str,
        gone: &'a [(String, u64, Position)],
    },
    /// A stored batch that cannot be framed (only a bug gets here): skipped.
    BatchSkipped {
        output: &'a str,
        error: &'a dyn Display,
    },
    /// A delivery attempt failed in `phase`; the batch is written again after the backoff,
    /// or stays in the spool when the relay is stopping.
    DeliveryFailed {
        output: &'a str,
        phase: Phase,
        error: &'a dyn Display,
        attempt: u32,
        stopping: bool,
    },
    /// The graceful close of a connection failed; `idle` when nothing was written on it
    /// (otherwise its batches are reported [`Event::Unconfirmed`]).
    CloseFailed {
        output: &'a str,
        dest: &'a str,
        reason: &'a str,
        idle: bool,
    },
    /// A connection's writes were not confirmed: its batches are resent.
    Unconfirmed {
        output: &'a str,
        dest: &'a str,
        why: ConfirmFailure,
        reason: &'a str,
        batches: usize,
        events: u64,
    },
}

/// Reads one figure of an output, for the exposition.
type Pick = fn(&OutputMetrics) -> i64;

/// One output's figures.
#[derive(Debug, Default)]
pub(crate) struct OutputMetrics {
    pub(crate) events_delivered: Counter,
    pub(crate) bytes_delivered: Counter,
    pub(crate) batches_delivered: Counter,
    errors: [Counter; 5],
    pub(crate) connections_open: Gauge,
    pub(crate) connects: Counter,
    pub(crate) retrying: Gauge,
    pub(crate) rate_limited_waits: Counter,
    /// Connections closed gracefully with every write on them confirmed.
    pub(crate) connections_confirmed: Counter,
    /// Batches written, then resent because their connection was not confirmed.
    batches_resent: Counter,
    /// Connections whose writes were not confirmed, by reason.
    confirm_failures: [Counter; 5],
    /// Batches written and held in memory until their connection is confirmed.
    pub(crate) unconfirmed_batches: Gauge,
}

/// Every figure the relay exposes.
#[derive(Debug)]
pub struct Metrics {
    batches_accepted: Counter,
    batches_duplicate: Counter,
    events_accepted: Counter,
    bytes_accepted: Counter,
    refused: [Counter; 6],
    pub(crate) spool_bytes: Gauge,
    pub(crate) spool_max_bytes: Gauge,
    pub(crate) spool_segments: Gauge,
    pub(crate) spool_corrupt_records: Counter,
    spool_full: Counter,
    /// Ranges of spool bytes skipped as corrupt (or cut off as a torn tail).
    pub(crate) spool_skipped_ranges: Counter,
    /// Bytes in those ranges.
    pub(crate) spool_skipped_bytes: Counter,
    /// Segments that vanished or were truncated below their durable end.
    pub(crate) spool_lost_segments: Counter,
    /// Idempotency keys forgotten because their batch could not be read back.
    pub(crate) spool_keys_forgotten: Counter,
    /// The channel listener's connections.
    pub(crate) channel: ChannelMetrics,
    outputs: BTreeMap<String, OutputMetrics>,
    /// Shared by outputs whose name is unknown (never in practice; keeps lookups total).
    fallback: OutputMetrics,
}

impl Metrics {
    /// Figures for the outputs named `outputs`.
    pub fn new(outputs: &[String]) -> Self {
        Metrics {
            batches_accepted: Counter::default(),
            batches_duplicate: Counter::default(),
            events_accepted: Counter::default(),
            bytes_accepted: Counter::default(),
            refused: Default::default(),
            spool_bytes: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            spool_segments: Gauge::default(),
            spool_corrupt_records: Counter::default(),
            spool_full: Counter::default(),
            spool_skipped_ranges: Counter::default(),
            spool_skipped_bytes: Counter::default(),
            spool_lost_segments: Counter::default(),
            spool_keys_forgotten: Counter::default(),
            channel: ChannelMetrics::default(),
            outputs: outputs
                .iter()
                .map(|n| (n.clone(), OutputMetrics::default()))
                .collect(),
            fallback: OutputMetrics::default(),
        }
    }

    pub(crate) fn output(&self, name: &str) -> &OutputMetrics {
        self.outputs.get(name).unwrap_or(&self.fallback)
    }

    /// Logs and counts one outcome.
    pub(crate) fn record(&self, event: Event<'_>) {
        match event {
            Event::Refused {
                why,
                status,
                message,
            } => {
                self.refused[why as usize].inc();
                tracing::debug!(status, %message, "batch refused");
            }
            Event::Stored { events, bytes } => {
                self.batches_accepted.inc();
                self.events_accepted.add(events);
                self.bytes_accepted.add(bytes);
            }
            Event::Duplicate => self.batches_duplicate.inc(),
            Event::SpoolFull => self.spool_full.inc(),
            Event::SkippedRange {
                path,
                segment,
                range,
                reason,
                what,
            } => {
                self.spool_corrupt_records.inc();
                self.spool_skipped_ranges.inc();
                self.spool_skipped_bytes.add(range.1 - range.0);
                tracing::error!(
                    segment,
                    path = %path.display(),
                    start = range.0,
                    end = range.1,
                    bytes = range.1 - range.0,
                    reason,
                    "spool: {what}"
                );
            }
            Event::SegmentLost { segment, how } => {
                self.spool_lost_segments.inc();
                segment_lost(segment, how);
            }
            Event::KeysForgotten { why, gone } => {
                if gone.is_empty() {
                    return;
                }
                self.spool_keys_forgotten.add(gone.len() as u64);
                keys_forgotten(why, gone);
            }
            Event::BatchSkipped { output, error } => {
                self.output(output).errors[Phase::Decode as usize].inc();
                tracing::error!(output = %output, error = %error, "batch skipped");
            }
            Event::DeliveryFailed {
                output,
                phase,
                error,
                attempt,
                stopping,
            } => {
                self.output(output).errors[phase as usize].inc();
                if stopping {
                    tracing::warn!(output = %output, error = %error, "delivery failed during shutdown; the batch stays in the spool");
                } else {
                    tracing::warn!(
                        output = %output,
                        error = %error,
                        attempt,
                        "delivery failed; resending the whole batch"
                    );
                }
            }
            Event::CloseFailed {
                output,
                dest,
                reason,
                idle,
            } => {
                self.output(output).errors[Phase::Close as usize].inc();
                if idle {
                    tracing::info!(output = %output, dest = %dest, reason = %reason, "close of an idle connection failed");
                }
            }
            Event::Unconfirmed {
                output,
                dest,
                why,
                reason,
                batches,
                events,
            } => {
                let m = self.output(output);
                m.confirm_failures[why as usize].inc();
                m.batches_resent.add(batches as u64);
                m.unconfirmed_batches.add(-(batches as i64));
                tracing::warn!(
                    output = %output,
                    dest = %dest,
                    reason = %reason,
                    batches,
                    events,
                    "writes not confirmed ({}): resending {batches} batches",
                    why.label()
                );
            }
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut e = Exposition::new();
        e.sample(&BATCHES_ACCEPTED, &[], self.batches_accepted.get());
        e.sample(&BATCHES_DUPLICATE, &[], self.batches_duplicate.get());
        for r in Refusal::ALL {
            e.sample(
                &BATCHES_REFUSED,
                &[r.label()],
                self.refused[r as usize].get(),
            );
        }
        e.sample(&EVENTS_ACCEPTED, &[], self.events_accepted.get());
        e.sample(&BYTES_ACCEPTED, &[], self.bytes_accepted.get());
        e.sample(&SPOOL_BYTES, &[], self.spool_bytes.get());
        e.sample(&SPOOL_MAX_BYTES, &[], self.spool_max_bytes.get());
        e.sample(&SPOOL_SEGMENTS, &[], self.spool_segments.get());
        let spool_counters = [
            (&SPOOL_CORRUPT_RECORDS, &self.spool_corrupt_records),
            (&SPOOL_FULL, &self.spool_full),
            (&SPOOL_SKIPPED_RANGES, &self.spool_skipped_ranges),
            (&SPOOL_SKIPPED_BYTES, &self.spool_skipped_bytes),
            (&SPOOL_LOST_SEGMENTS, &self.spool_lost_segments),
            (&SPOOL_KEYS_FORGOTTEN, &self.spool_keys_forgotten),
        ];
        for (metric, counter) in spool_counters {
            e.sample(metric, &[], counter.get());
        }
        self.channel.render(&mut e);
        let delivery: [(&Metric, Pick); 7] = [
            (&EVENTS_DELIVERED, |m| m.events_delivered.get() as i64),
            (&BYTES_DELIVERED, |m| m.bytes_delivered.get() as i64),
            (&BATCHES_DELIVERED, |m| m.batches_delivered.get() as i64),
            (&OUTPUT_CONNECTIONS_OPEN, |m| m.connections_open.get()),
            (&OUTPUT_CONNECTS, |m| m.connects.get() as i64),
            (&OUTPUT_RETRYING, |m| m.retrying.get()),
            (&OUTPUT_RATE_LIMITED, |m| m.rate_limited_waits.get() as i64),
        ];
        self.per_output(&mut e, &delivery);
        e.head(&OUTPUT_ERRORS);
        for (out, m) in &self.outputs {
            for p in Phase::ALL {
                e.sample(
                    &OUTPUT_ERRORS,
                    &[out, p.label()],
                    m.errors[p as usize].get(),
                );
            }
        }
        let confirmation: [(&Metric, Pick); 3] = [
            (&OUTPUT_CONNECTIONS_CONFIRMED, |m| {
                m.connections_confirmed.get() as i64
            }),
            (&OUTPUT_BATCHES_RESENT, |m| m.batches_resent.get() as i64),
            (&OUTPUT_UNCONFIRMED_BATCHES, |m| m.unconfirmed_batches.get()),
        ];
        self.per_output(&mut e, &confirmation);
        e.head(&OUTPUT_CONFIRM_FAILURES);
        for (out, m) in &self.outputs {
            for r in ConfirmFailure::ALL {
                let value = m.confirm_failures[r as usize].get();
                e.sample(&OUTPUT_CONFIRM_FAILURES, &[out, r.label()], value);
            }
        }
        e.finish()
    }

    /// One metric per entry, one sample per output each.
    fn per_output(&self, e: &mut Exposition, metrics: &[(&Metric, Pick)]) {
        for (metric, pick) in metrics {
            e.head(metric);
            for (out, m) in &self.outputs {
                e.sample(metric, &[out], pick(m));
            }
        }
    }
}

fn segment_lost(segment: u64, how: SegmentLoss<'_>) {
    match how {
        SegmentLoss::MissingAtStart => tracing::error!(
            segment,
            "spool: segment missing at start although not every output delivered it; its \
             batches are lost"
        ),
        SegmentLoss::Vanished { path, bytes } => tracing::error!(
            segment,
            path = %path.display(),
            bytes,
            "spool: segment vanished while the relay ran; its undelivered batches are lost, \
             readers go on with the next segment"
        ),
        SegmentLoss::Truncated {
            path,
            durable_end,
            file_size,
        } => tracing::error!(
            segment,
            path = %path.display(),
            durable_end,
            file_size,
            "spool: segment truncated below its durable end while the relay ran; the batches \
             past its end are lost"
        ),
    }
}

/// Logs forgotten keys: the first [`LOG_KEYS`] one per line, then a summary.
fn keys_forgotten(why: &str, gone: &[(String, u64, Position)]) {
    for (key, events, loc) in gone.iter().take(LOG_KEYS) {
        tracing::warn!(
            key = %key,
            events,
            segment = loc.segment,
            offset = loc.offset,
            why,
            "spool: idempotency key forgotten (its batch is lost; a resend will be stored again)"
        );
    }
    tracing::warn!(
        forgotten = gone.len(),
        not_listed = gone.len().saturating_sub(LOG_KEYS),
        why,
        "spool: idempotency keys forgotten"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::new(&["devo".to_string()]);
        m.batches_accepted.add(3);
        m.record(Event::Refused {
            why: Refusal::TooLarge,
            status: 413,
            message: "too large",
        });
        m.output("devo").events_delivered.add(7);
        m.record(Event::DeliveryFailed {
            output: "devo",
            phase: Phase::Handshake,
            error: &"handshake failed",
            attempt: 1,
            stopping: false,
        });
        let text = m.render();
        assert!(
            text.contains("sluice_relay_batches_accepted_total 3\n"),
            "{text}"
        );
        assert!(text.contains("sluice_relay_batches_refused_total{reason=\"too_large\"} 1\n"));
        assert!(text.contains("sluice_relay_events_delivered_total{output=\"devo\"} 7\n"));
        assert!(text
            .contains("sluice_relay_output_errors_total{output=\"devo\",phase=\"handshake\"} 1\n"));
        assert!(text.contains("# TYPE sluice_relay_spool_bytes gauge\n"));
        m.record(Event::SkippedRange {
            path: Path::new("/spool/1.seg"),
            segment: 1,
            range: (10, 52),
            reason: "bad checksum",
            what: "corrupt bytes skipped",
        });
        let text = m.render();
        assert!(text.contains("sluice_relay_spool_skipped_bytes_total 42\n"));
        assert!(text.contains("sluice_relay_spool_corrupt_records_total 1\n"));
        assert!(text.contains("# TYPE sluice_relay_spool_lost_segments_total counter\n"));
    }

    #[test]
    fn confirmation_exposition() {
        let m = Metrics::new(&["devo".to_string()]);
        m.output("devo").unconfirmed_batches.add(6);
        m.record(Event::Unconfirmed {
            output: "devo",
            dest: "devo:443",
            why: ConfirmFailure::Reset,
            reason: "connection reset",
            batches: 4,
            events: 40,
        });
        let text = m.render();
        assert!(text.contains("sluice_relay_output_batches_resent_total{output=\"devo\"} 4\n"));
        assert!(text.contains(
            "sluice_relay_output_confirm_failures_total{output=\"devo\",reason=\"reset\"} 1\n"
        ));
        assert!(text.contains(
            "sluice_relay_output_confirm_failures_total{output=\"devo\",reason=\"timeout\"} 0\n"
        ));
        assert!(text.contains("sluice_relay_output_unconfirmed_batches{output=\"devo\"} 2\n"));
    }

    /// Every series, byte for byte as the hand-written exposition before the declarations
    /// (testdata/metrics.prom was rendered by it): names, help, types, labels, order, values.
    #[test]
    fn exposition_is_unchanged() {
        let m = Metrics::new(&["devo".to_string(), "out".to_string()]);
        m.batches_accepted.add(1);
        m.batches_duplicate.add(2);
        m.events_accepted.add(3);
        m.bytes_accepted.add(4);
        m.spool_bytes.set(5);
        m.spool_max_bytes.set(6);
        m.spool_segments.set(7);
        m.spool_corrupt_records.add(8);
        m.spool_full.add(9);
        m.spool_skipped_ranges.add(10);
        m.spool_skipped_bytes.add(11);
        m.spool_lost_segments.add(12);
        m.spool_keys_forgotten.add(13);
        m.channel.connections_open.set(14);
        m.channel.connections.add(15);
        m.channel.at_cap.add(16);
        for (i, r) in Reaped::ALL.into_iter().enumerate() {
            m.channel.reaped[r as usize].add(i as u64 + 17);
        }
        m.channel.body_budget_bytes.set(21);
        for (i, r) in Refusal::ALL.into_iter().enumerate() {
            m.refused[r as usize].add(i as u64 + 1);
        }
        for (k, name) in ["devo", "out"].into_iter().enumerate() {
            let o = m.output(name);
            let b = 100 * (k as u64 + 1);
            o.events_delivered.add(b + 1);
            o.bytes_delivered.add(b + 2);
            o.batches_delivered.add(b + 3);
            o.connections_open.set((b + 4) as i64);
            o.connects.add(b + 5);
            o.retrying.set((b + 6) as i64);
            o.rate_limited_waits.add(b + 7);
            o.connections_confirmed.add(b + 8);
            o.batches_resent.add(b + 9);
            o.unconfirmed_batches.set(-((b + 10) as i64));
            for (i, p) in Phase::ALL.into_iter().enumerate() {
                o.errors[p as usize].add((i + k) as u64 + 1);
            }
            for (i, r) in ConfirmFailure::ALL.into_iter().enumerate() {
                o.confirm_failures[r as usize].add((i + 2 * k) as u64 + 1);
            }
        }
        assert_eq!(m.render(), include_str!("../testdata/metrics.prom"));
    }
}
