//! Process metrics: counters and gauges with a few low-cardinality labels, rendered in the
//! Prometheus text format, and the tiny HTTP listener that serves them.
//!
//! Outcomes are counted per message, object and batch, never per event on the hot path, so
//! one mutex is plenty. It does not log: callers log and count in the same place.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// One series: name plus rendered labels.
type Series = (&'static str, String);

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<Series, i64>,
    help: BTreeMap<&'static str, &'static str>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
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
    out
}

/// Adds `by` to the counter `name{labels}`; `help` documents the metric once.
pub fn count(name: &'static str, help: &'static str, labels: &[(&str, &str)], by: u64) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert(help);
    *r.counters.entry((name, render_labels(labels))).or_insert(0) += by;
}

/// Adds `by` (may be negative) to the gauge `name{labels}`.
pub fn gauge_add(name: &'static str, help: &'static str, labels: &[(&str, &str)], by: i64) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert(help);
    *r.gauges.entry((name, render_labels(labels))).or_insert(0) += by;
}

/// Current value of a counter (tests and shutdown summaries).
pub fn counter_value(name: &'static str, labels: &[(&str, &str)]) -> u64 {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.counters
        .get(&(name, render_labels(labels)))
        .copied()
        .unwrap_or(0)
}

/// The Prometheus text exposition of every series.
pub fn render() -> String {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let mut last = "";
    let mut write = |name: &'static str, kind: &str, labels: &str, value: String| {
        if name != last {
            out.push_str(&format!(
                "# HELP {name} {}\n# TYPE {name} {kind}\n",
                r.help.get(name).unwrap_or(&"")
            ));
            last = name;
        }
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    for ((name, labels), v) in &r.counters {
        write(name, "counter", labels, v.to_string());
    }
    for ((name, labels), v) in &r.gauges {
        write(name, "gauge", labels, v.to_string());
    }
    out
}

/// Serves `GET /metrics` (and `/health`) on `address` until `shutdown` fires.
pub async fn serve(
    address: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let _ = answer(stream).await;
            });
        }
    });
    Ok(local)
}

/// A deliberately minimal HTTP/1.0-style answer: one request per connection, GET only.
async fn answer(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap_or(Ok(0))?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", render()),
        "/health" => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        count("t_total", "a test", &[("input", "a\"b")], 2);
        count("t_total", "a test", &[("input", "a\"b")], 1);
        assert_eq!(counter_value("t_total", &[("input", "a\"b")]), 3);
        let text = render();
        assert!(text.contains("# TYPE t_total counter"));
        assert!(text.contains("t_total{input=\"a\\\"b\"} 3"));
    }
}
