//! The SFU's Prometheus counters: read from the in-process recorder or scraped over
//! HTTP, and parsed from the text exposition format.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::report::SfuMetrics;

/// Most bytes read from a metrics endpoint.
const MAX_SCRAPE_BYTES: usize = 8 << 20;

/// Parses the counters the report needs from Prometheus text.
#[must_use]
pub fn parse(text: &str) -> SfuMetrics {
    let mut m = SfuMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counters
        let value = value.max(0.0) as u64;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "conclave_datagrams_received_total" => m.datagrams_received += value,
            "conclave_datagrams_forwarded_total" => m.datagrams_forwarded += value,
            "conclave_room_evictions_total" => m.room_evictions += value,
            "conclave_datagrams_dropped_total" => {
                let reason = labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("reason="))
                    .map_or("unknown", |r| r.trim_matches('"'));
                *m.datagrams_dropped.entry(reason.to_string()).or_default() += value;
            }
            _ => {}
        }
    }
    m
}

/// `after - before`, counter by counter.
#[must_use]
pub fn delta(after: &SfuMetrics, before: &SfuMetrics) -> SfuMetrics {
    let dropped: BTreeMap<String, u64> = after
        .datagrams_dropped
        .iter()
        .map(|(k, v)| {
            let b = before.datagrams_dropped.get(k).copied().unwrap_or(0);
            (k.clone(), v.saturating_sub(b))
        })
        .collect();
    SfuMetrics {
        datagrams_received: after
            .datagrams_received
            .saturating_sub(before.datagrams_received),
        datagrams_forwarded: after
            .datagrams_forwarded
            .saturating_sub(before.datagrams_forwarded),
        datagrams_dropped: dropped,
        room_evictions: after.room_evictions.saturating_sub(before.room_evictions),
    }
}

/// GETs `url` (plain `http://host:port/path`) and returns the body.
pub async fn scrape(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("bad metrics URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("metrics URL must be http://, got {url}"));
    }
    let host = uri.host().ok_or("metrics URL without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_SCRAPE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_drop_reasons_are_read() {
        let text = "# HELP x\n\
            conclave_datagrams_received_total 100\n\
            conclave_datagrams_forwarded_total 900\n\
            conclave_datagrams_dropped_total{reason=\"no_room\"} 3\n\
            conclave_datagrams_dropped_total{reason=\"queue_full_audio\"} 2\n\
            conclave_room_evictions_total 1\n\
            garbage line\n";
        let m = parse(text);
        assert_eq!(m.datagrams_received, 100);
        assert_eq!(m.datagrams_forwarded, 900);
        assert_eq!(m.datagrams_dropped.get("no_room"), Some(&3));
        assert_eq!(m.room_evictions, 1);
        let d = delta(&m, &parse("conclave_datagrams_forwarded_total 400\n"));
        assert_eq!(d.datagrams_forwarded, 500);
        assert_eq!(d.datagrams_dropped.get("queue_full_audio"), Some(&2));
    }
}
