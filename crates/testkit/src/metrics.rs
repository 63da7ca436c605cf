//! Reading what the processes expose: plain HTTP/1.1 requests, Prometheus text parsing,
//! polling a metric until it holds.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request to `authority` (`host:port`); returns (status, body).
pub fn request(authority: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    // One write: the collector's metrics listener reads the request in one read (`write!`
    // would send it piece by piece and meet a closed socket).
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A request to `endpoint` (`http://host:port`), returning the body.
pub fn http(endpoint: &str, method: &str, path: &str) -> String {
    request(endpoint.trim_start_matches("http://"), method, path).1
}

/// A GET to `address` (`host:port`); returns (status, body).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    request(address, "GET", path)
}

/// The sum of the series of the counter `name` in a Prometheus text exposition whose labels
/// hold every one of `labels` (`("input", "test")`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            if !(series.is_empty() || series.starts_with('{')) {
                return None; // another metric whose name starts with `name`
            }
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

/// The value of metric `series` (`name` or `name{labels}`, exactly as exposed) in a
/// /metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `GET /metrics` at `address` until `series` satisfies `ok` (metrics are bumped after
/// the effect a test sees, e.g. stdout lines before `events_delivered_total`); returns the
/// text. Panics with the last text after `timeout`.
pub fn wait_metric(
    address: &str,
    series: &str,
    ok: impl Fn(i64) -> bool,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = http_get(address, "/metrics");
        if metric_value(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_values() {
        let text =
            "# HELP x\nx_total{input=\"a\"} 2\nx_total{input=\"b\"} 3\nx_total_more 9\ny 4\n";
        assert_eq!(metric_sum(text, "x_total", &[]), 5);
        assert_eq!(metric_sum(text, "x_total", &[("input", "b")]), 3);
        assert_eq!(metric_value(text, "y"), Some(4));
        assert_eq!(metric_value(text, "x_total{input=\"a\"}"), Some(2));
    }
}
