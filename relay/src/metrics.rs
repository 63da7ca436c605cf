//! The relay's counters and gauges, and their Prometheus text exposition (format 0.0.4) for
//! `GET /metrics`.
//!
//! Hand-written on atomics: the set is small and fixed at start (outputs are known from the
//! config), so a registry crate would add more than it saves. It does no I/O.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a batch was refused; the `reason` label of `sluice_relay_batches_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    BadRequest,
    Unauthorized,
    TooLarge,
    SpoolFull,
    Unavailable,
    Internal,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::TooLarge,
        Refusal::SpoolFull,
        Refusal::Unavailable,
        Refusal::Internal,
    ];
    pub fn label(self) -> &'static str {
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
pub enum Phase {
    Connect,
    Handshake,
    Write,
    Close,
    Decode,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Connect,
        Phase::Handshake,
        Phase::Write,
        Phase::Close,
        Phase::Decode,
    ];
    pub fn label(self) -> &'static str {
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
    pub const ALL: [ConfirmFailure; 5] = [
        ConfirmFailure::PeerClosed,
        ConfirmFailure::Reset,
        ConfirmFailure::Tls,
        ConfirmFailure::Timeout,
        ConfirmFailure::Write,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ConfirmFailure::PeerClosed => "peer_closed",
            ConfirmFailure::Reset => "reset",
            ConfirmFailure::Tls => "tls",
            ConfirmFailure::Timeout => "timeout",
            ConfirmFailure::Write => "write",
        }
    }
}

/// One output's figures.
#[derive(Debug, Default)]
pub struct OutputMetrics {
    pub events_delivered: Counter,
    pub bytes_delivered: Counter,
    pub batches_delivered: Counter,
    pub errors: [Counter; 5],
    pub connections_open: Gauge,
    pub connects: Counter,
    pub retrying: Gauge,
    pub rate_limited_waits: Counter,
    /// Connections closed gracefully with every write on them confirmed.
    pub connections_confirmed: Counter,
    /// Batches written, then resent because their connection was not confirmed.
    pub batches_resent: Counter,
    /// Connections whose writes were not confirmed, by reason.
    pub confirm_failures: [Counter; 5],
    /// Batches written and held in memory until their connection is confirmed.
    pub unconfirmed_batches: Gauge,
}

impl OutputMetrics {
    pub fn error(&self, phase: Phase) {
        self.errors[phase as usize].inc();
    }

    pub fn confirm_failure(&self, why: ConfirmFailure) {
        self.confirm_failures[why as usize].inc();
    }
}

/// Every figure the relay exposes.
#[derive(Debug)]
pub struct Metrics {
    pub batches_accepted: Counter,
    pub batches_duplicate: Counter,
    pub events_accepted: Counter,
    pub bytes_accepted: Counter,
    refused: [Counter; 6],
    pub spool_bytes: Gauge,
    pub spool_max_bytes: Gauge,
    pub spool_segments: Gauge,
    pub spool_corrupt_records: Counter,
    pub spool_full_events: Counter,
    /// Ranges of spool bytes skipped as corrupt (or cut off as a torn tail).
    pub spool_skipped_ranges: Counter,
    /// Bytes in those ranges.
    pub spool_skipped_bytes: Counter,
    /// Segments that vanished or were truncated below their durable end.
    pub spool_lost_segments: Counter,
    /// Idempotency keys forgotten because their batch could not be read back.
    pub spool_keys_forgotten: Counter,
    pub outputs: BTreeMap<String, OutputMetrics>,
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
            spool_full_events: Counter::default(),
            spool_skipped_ranges: Counter::default(),
            spool_skipped_bytes: Counter::default(),
            spool_lost_segments: Counter::default(),
            spool_keys_forgotten: Counter::default(),
            outputs: outputs
                .iter()
                .map(|n| (n.clone(), OutputMetrics::default()))
                .collect(),
            fallback: OutputMetrics::default(),
        }
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].inc();
    }

    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused[why as usize].get()
    }

    pub fn output(&self, name: &str) -> &OutputMetrics {
        self.outputs.get(name).unwrap_or(&self.fallback)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let w = &mut s;
        head(
            w,
            "sluice_relay_batches_accepted_total",
            "counter",
            "Batches stored in the spool (answered 200, not duplicate).",
        );
        line(
            w,
            "sluice_relay_batches_accepted_total",
            "",
            self.batches_accepted.get() as i64,
        );
        head(
            w,
            "sluice_relay_batches_duplicate_total",
            "counter",
            "Batches whose idempotency key was already stored.",
        );
        line(
            w,
            "sluice_relay_batches_duplicate_total",
            "",
            self.batches_duplicate.get() as i64,
        );
        head(
            w,
            "sluice_relay_batches_refused_total",
            "counter",
            "Batches refused, by reason.",
        );
        for r in Refusal::ALL {
            line(
                w,
                "sluice_relay_batches_refused_total",
                &format!("reason=\"{}\"", r.label()),
                self.refused_count(r) as i64,
            );
        }
        head(
            w,
            "sluice_relay_events_accepted_total",
            "counter",
            "Events stored in the spool.",
        );
        line(
            w,
            "sluice_relay_events_accepted_total",
            "",
            self.events_accepted.get() as i64,
        );
        head(
            w,
            "sluice_relay_bytes_accepted_total",
            "counter",
            "Compressed batch bytes stored in the spool.",
        );
        line(
            w,
            "sluice_relay_bytes_accepted_total",
            "",
            self.bytes_accepted.get() as i64,
        );
        head(
            w,
            "sluice_relay_spool_bytes",
            "gauge",
            "Bytes of segment files on disk.",
        );
        line(w, "sluice_relay_spool_bytes", "", self.spool_bytes.get());
        head(
            w,
            "sluice_relay_spool_max_bytes",
            "gauge",
            "The spool's configured maximum.",
        );
        line(
            w,
            "sluice_relay_spool_max_bytes",
            "",
            self.spool_max_bytes.get(),
        );
        head(
            w,
            "sluice_relay_spool_segments",
            "gauge",
            "Segment files on disk.",
        );
        line(
            w,
            "sluice_relay_spool_segments",
            "",
            self.spool_segments.get(),
        );
        head(
            w,
            "sluice_relay_spool_corrupt_records_total",
            "counter",
            "Torn or corrupt spool records detected and skipped.",
        );
        line(
            w,
            "sluice_relay_spool_corrupt_records_total",
            "",
            self.spool_corrupt_records.get() as i64,
        );
        head(
            w,
            "sluice_relay_spool_full_total",
            "counter",
            "Appends refused because the spool was full.",
        );
        line(
            w,
            "sluice_relay_spool_full_total",
            "",
            self.spool_full_events.get() as i64,
        );
        let spool_damage: [(&str, &str, &Counter); 4] = [
            (
                "sluice_relay_spool_skipped_ranges_total",
                "Ranges of spool bytes skipped as corrupt or cut off as a torn tail.",
                &self.spool_skipped_ranges,
            ),
            (
                "sluice_relay_spool_skipped_bytes_total",
                "Spool bytes skipped as corrupt or cut off as a torn tail.",
                &self.spool_skipped_bytes,
            ),
            (
                "sluice_relay_spool_lost_segments_total",
                "Spool segments that vanished or were truncated below their durable end.",
                &self.spool_lost_segments,
            ),
            (
                "sluice_relay_spool_keys_forgotten_total",
                "Idempotency keys forgotten because their batch could not be read back.",
                &self.spool_keys_forgotten,
            ),
        ];
        for (name, help, counter) in spool_damage {
            head(w, name, "counter", help);
            line(w, name, "", counter.get() as i64);
        }

        type Pick = fn(&OutputMetrics) -> i64;
        let per_output: [(&str, &str, &str, Pick); 7] = [
            (
                "sluice_relay_events_delivered_total",
                "counter",
                "Events delivered: flushed (stdout, file), or confirmed by a graceful close the peer answered (devo, relay).",
                |m| m.events_delivered.get() as i64,
            ),
            (
                "sluice_relay_bytes_delivered_total",
                "counter",
                "Bytes delivered (as on the wire), counted as events are.",
                |m| m.bytes_delivered.get() as i64,
            ),
            (
                "sluice_relay_batches_delivered_total",
                "counter",
                "Batches delivered, counted as events are.",
                |m| m.batches_delivered.get() as i64,
            ),
            (
                "sluice_relay_output_connections_open",
                "gauge",
                "Open connections of the output.",
                |m| m.connections_open.get(),
            ),
            (
                "sluice_relay_output_connects_total",
                "counter",
                "Connections established by the output.",
                |m| m.connects.get() as i64,
            ),
            (
                "sluice_relay_output_retrying",
                "gauge",
                "Workers of the output currently backing off after an error.",
                |m| m.retrying.get(),
            ),
            (
                "sluice_relay_output_rate_limited_total",
                "counter",
                "Times the output waited for its rate limit.",
                |m| m.rate_limited_waits.get() as i64,
            ),
        ];
        for (name, kind, help, pick) in per_output {
            head(w, name, kind, help);
            for (out, m) in &self.outputs {
                line(w, name, &format!("output=\"{out}\""), pick(m));
            }
        }
        head(
            w,
            "sluice_relay_output_errors_total",
            "counter",
            "Output errors, by phase (connect, handshake, write, close, decode).",
        );
        for (out, m) in &self.outputs {
            for p in Phase::ALL {
                line(
                    w,
                    "sluice_relay_output_errors_total",
                    &format!("output=\"{out}\",phase=\"{}\"", p.label()),
                    m.errors[p as usize].get() as i64,
                );
            }
        }
        self.render_confirmation(w);
        s
    }

    /// The figures of delivery confirmation (output/confirm.rs).
    fn render_confirmation(&self, w: &mut String) {
        type Pick = fn(&OutputMetrics) -> i64;
        let per_output: [(&str, &str, &str, Pick); 3] = [
            (
                "sluice_relay_output_connections_confirmed_total",
                "counter",
                "Connections closed gracefully with every write on them confirmed by the peer.",
                |m| m.connections_confirmed.get() as i64,
            ),
            (
                "sluice_relay_output_batches_resent_total",
                "counter",
                "Batches written on a connection that was not confirmed, hence resent.",
                |m| m.batches_resent.get() as i64,
            ),
            (
                "sluice_relay_output_unconfirmed_batches",
                "gauge",
                "Batches written and awaiting their connection's confirmation (held in memory).",
                |m| m.unconfirmed_batches.get(),
            ),
        ];
        for (name, kind, help, pick) in per_output {
            head(w, name, kind, help);
            for (out, m) in &self.outputs {
                line(w, name, &format!("output=\"{out}\""), pick(m));
            }
        }
        head(
            w,
            "sluice_relay_output_confirm_failures_total",
            "counter",
            "Connections with unconfirmed writes that ended otherwise than by a graceful close, by reason (peer_closed, reset, tls, timeout, write).",
        );
        for (out, m) in &self.outputs {
            for r in ConfirmFailure::ALL {
                line(
                    w,
                    "sluice_relay_output_confirm_failures_total",
                    &format!("output=\"{out}\",reason=\"{}\"", r.label()),
                    m.confirm_failures[r as usize].get() as i64,
                );
            }
        }
    }
}

fn head(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(s: &mut String, name: &str, labels: &str, v: i64) {
    if labels.is_empty() {
        let _ = writeln!(s, "{name} {v}");
    } else {
        let _ = writeln!(s, "{name}{{{labels}}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::new(&["devo".to_string()]);
        m.batches_accepted.add(3);
        m.refused(Refusal::TooLarge);
        m.output("devo").events_delivered.add(7);
        m.output("devo").error(Phase::Handshake);
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
        m.spool_skipped_bytes.add(42);
        let text = m.render();
        assert!(text.contains("sluice_relay_spool_skipped_bytes_total 42\n"));
        assert!(text.contains("# TYPE sluice_relay_spool_lost_segments_total counter\n"));
    }

    #[test]
    fn confirmation_exposition() {
        let m = Metrics::new(&["devo".to_string()]);
        m.output("devo").batches_resent.add(4);
        m.output("devo").confirm_failure(ConfirmFailure::Reset);
        m.output("devo").unconfirmed_batches.add(2);
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
}
