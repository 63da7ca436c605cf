//! Metrics, one style for both processes: every metric is declared once as a [`Metric`]
//! constant (name, help, kind, label names), values live either in the process-wide
//! [`Registry`] (series created on first use) or in a caller's own atomics, and both are
//! written by one [`Exposition`] in the Prometheus text format (0.0.4).
//!
//! The convention on top, in each binary: every outcome is one typed event (an enum or a
//! function in that binary's `telemetry` module) that logs and counts in one place, so a
//! count never exists without its log line and no metric name is spelled twice.
//!
//! It does no I/O: the binaries serve the text.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::Mutex;

/// Whether a metric only goes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric's declaration: the only place its name and help text are written.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Label names; every sample gives one value per name, in this order.
    pub labels: &'static [&'static str],
}

impl Metric {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Metric {
        Metric {
            name,
            help,
            kind: Kind::Counter,
            labels,
        }
    }

    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Metric {
        Metric {
            name,
            help,
            kind: Kind::Gauge,
            labels,
        }
    }
}

/// Writes samples in the text format: `# HELP` and `# TYPE` once per metric, before its
/// first sample. Samples of one metric must be written together.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    last: Option<&'static str>,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition::default()
    }

    /// One sample of `metric` with one value per label name.
    pub fn sample(&mut self, metric: &Metric, label_values: &[&str], value: impl Display) {
        debug_assert_eq!(
            metric.labels.len(),
            label_values.len(),
            "{}: one value per label",
            metric.name
        );
        self.head(metric);
        self.out.push_str(metric.name);
        if !metric.labels.is_empty() {
            self.out.push('{');
            push_labels(
                &mut self.out,
                metric
                    .labels
                    .iter()
                    .copied()
                    .zip(label_values.iter().copied()),
            );
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// Declares `metric` with no sample yet (so a scrape shows it exists).
    pub fn head(&mut self, metric: &Metric) {
        if self.last != Some(metric.name) {
            let _ = write!(
                self.out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                name = metric.name,
                help = metric.help,
                kind = metric.kind.as_str()
            );
            self.last = Some(metric.name);
        }
    }

    /// Writes every series of `registry`.
    pub fn registry(&mut self, registry: &Registry) {
        let series = registry.lock();
        for ((_, labels), (metric, value)) in series.iter() {
            self.head(metric);
            self.out.push_str(metric.name);
            if !labels.is_empty() {
                let _ = write!(self.out, "{{{labels}}}");
            }
            let _ = writeln!(self.out, " {value}");
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn push_labels<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

type Series = BTreeMap<(&'static str, String), (&'static Metric, i64)>;

/// Series created on first use, for metrics whose label values are only known at run time
/// (queue names, inputs, reasons). Counted per message, object or batch, never per event, so
/// one mutex is plenty.
#[derive(Debug, Default)]
pub struct Registry {
    series: Mutex<Series>,
}

impl Registry {
    pub const fn new() -> Self {
        Registry {
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `by` to the series `metric{label_values}` (a gauge may go down).
    pub fn add(&self, metric: &'static Metric, label_values: &[&str], by: i64) {
        debug_assert!(
            metric.kind == Kind::Gauge || by >= 0,
            "{}: a counter only goes up",
            metric.name
        );
        let key = (metric.name, render_labels(metric, label_values));
        self.lock().entry(key).or_insert((metric, 0)).1 += by;
    }

    /// The current value of `metric{label_values}` (0 when never touched).
    pub fn value(&self, metric: &Metric, label_values: &[&str]) -> i64 {
        let key = (metric.name, render_labels(metric, label_values));
        self.lock().get(&key).map(|s| s.1).unwrap_or(0)
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        e.registry(self);
        e.finish()
    }
}

fn render_labels(metric: &Metric, label_values: &[&str]) -> String {
    debug_assert_eq!(
        metric.labels.len(),
        label_values.len(),
        "{}: one value per label",
        metric.name
    );
    let mut out = String::new();
    push_labels(
        &mut out,
        metric
            .labels
            .iter()
            .copied()
            .zip(label_values.iter().copied()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    static T: Metric = Metric::counter("t_total", "a test", &["input"]);
    static G: Metric = Metric::gauge("t_level", "a level", &[]);

    #[test]
    fn registry_renders_declared_metrics_once() {
        let r = Registry::new();
        r.add(&T, &["a\"b"], 2);
        r.add(&T, &["a\"b"], 1);
        r.add(&T, &["c"], 1);
        r.add(&G, &[], 5);
        r.add(&G, &[], -2);
        assert_eq!(r.value(&T, &["a\"b"]), 3);
        assert_eq!(r.value(&T, &["zzz"]), 0);
        let text = r.render();
        assert_eq!(text.matches("# TYPE t_total counter").count(), 1, "{text}");
        assert!(text.contains("# HELP t_total a test\n"), "{text}");
        assert!(text.contains("t_total{input=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("t_total{input=\"c\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE t_level gauge\nt_level 3\n"), "{text}");
    }

    #[test]
    fn exposition_writes_atomics_alike() {
        let mut e = Exposition::new();
        e.sample(&T, &["x"], 7u64);
        e.sample(&T, &["y"], 8u64);
        e.sample(&G, &[], -1i64);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP t_total a test\n# TYPE t_total counter\nt_total{input=\"x\"} 7\n\
             t_total{input=\"y\"} 8\n# HELP t_level a level\n# TYPE t_level gauge\nt_level -1\n"
        );
    }
}
