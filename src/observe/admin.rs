//! The admin endpoints: Prometheus metrics, the same as JSON, a status page,
//! and health checks. Served on the admin listener (loopback by default) or
//! under a configured mount point.

use std::fmt::Write;
use std::rc::Rc;
use std::time::SystemTime;

use futures_util::future::LocalBoxFuture;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use serde_json::json;

use super::metrics::{CLASSES, PROTOCOLS, QUANTILES, ShardSnapshot, Shed, Summary, merged_by_mount};
use crate::http::{Request, Response, ResponseExt, error_response};
use crate::mount::{Ctx, Handler, HandlerFactory, ShardInfo};
use crate::shard::services::ShardServices;

/// Seconds between refreshes of the status page.
const STATUS_REFRESH_SECS: u32 = 5;

/// Builds the admin handler on every shard.
#[derive(Debug, Clone)]
pub(crate) struct AdminFactory {
    pub(crate) name: String,
    pub(crate) started: SystemTime,
}

impl HandlerFactory for AdminFactory {
    fn build(&self, _shard: &ShardInfo) -> Rc<dyn Handler> {
        Rc::new(Admin { name: self.name.clone(), started: self.started })
    }
}

struct Admin {
    name: String,
    started: SystemTime,
}

/// Every shard's metrics: this worker's gathered through the bus (shards
/// that cannot answer, stopped or with a full queue, are left out), and the
/// other workers' latest published ones.
async fn gather(cx: &Ctx) -> Vec<ShardSnapshot> {
    let answers = cx.fan_out(|info| ShardServices::current().map(|s| s.snapshot(info.id))).await;
    let mut all: Vec<ShardSnapshot> = match answers {
        Ok(all) => all.into_iter().flatten().collect(),
        Err(e) => {
            tracing::debug!("metrics: {e}");
            ShardServices::current().map(|s| vec![s.snapshot(cx.shard_id())]).unwrap_or_default()
        }
    };
    if let Some(peers) = ShardServices::current().and_then(|s| s.peers.clone()) {
        all.extend(peers.others());
        all.sort_by_key(|s| s.shard);
    }
    all
}

impl Handler for Admin {
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return error_response(StatusCode::METHOD_NOT_ALLOWED, None, None);
            }
            let mut response = match req.uri().path() {
                "/healthz" => Response::text("ok\n"),
                "/readyz" => {
                    let draining = ShardServices::current().is_some_and(|s| s.metrics.draining());
                    if draining {
                        let mut r = Response::text("draining\n");
                        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        r
                    } else {
                        Response::text("ready\n")
                    }
                }
                "/metrics" => {
                    let mut r = Response::text(prometheus(&gather(cx).await));
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                    r
                }
                "/metrics.json" | "/status.json" => Response::json(&self.json(&gather(cx).await)),
                "/" | "/status" => Response::html(self.page(&gather(cx).await)),
                _ => error_response(StatusCode::NOT_FOUND, None, None),
            };
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        })
    }
}

/// A metric family of one value per shard: name, help, how to read it.
type PerShard<T> = (&'static str, &'static str, fn(&ShardSnapshot) -> T);

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition: counters and gauges per shard, handling
/// time as a summary (quantiles) per shard and mount.
fn prometheus(shards: &[ShardSnapshot]) -> String {
    let mut out = String::with_capacity(8192);
    let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        rows(&mut out);
    };
    family("skitai_requests_total", "counter", "Requests answered, by protocol and status class.", &mut |o| {
        for s in shards {
            for (p, protocol) in PROTOCOLS.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "skitai_requests_total{{shard=\"{}\",protocol=\"{protocol}\",class=\"{class}\"}} {}",
                        s.shard, s.requests[p][c]
                    );
                }
            }
        }
    });
    let counters: [PerShard<u64>; 7] = [
        ("skitai_request_body_bytes_total", "Request body bytes received.", |s| s.request_bytes),
        ("skitai_response_body_bytes_total", "Response body bytes sent.", |s| s.response_bytes),
        ("skitai_accept_errors_total", "Failed accepts (e.g. out of file descriptors).", |s| s.accept_errors),
        ("skitai_websocket_opened_total", "WebSocket connections opened.", |s| s.ws_opened),
        ("skitai_websocket_messages_received_total", "WebSocket messages received.", |s| s.ws_messages_in),
        ("skitai_websocket_messages_sent_total", "WebSocket messages sent.", |s| s.ws_messages_out),
        ("skitai_log_dropped_lines_total", "Request log lines dropped because the writer fell behind.", |s| {
            s.log_dropped
        }),
    ];
    for (name, help, get) in counters {
        family(name, "counter", help, &mut |o| {
            for s in shards {
                let _ = writeln!(o, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
            }
        });
    }
    family("skitai_shed_total", "counter", "Requests and connections refused with 503, by reason.", &mut |o| {
        for s in shards {
            for (i, reason) in Shed::NAMES.iter().enumerate() {
                let _ = writeln!(o, "skitai_shed_total{{shard=\"{}\",reason=\"{reason}\"}} {}", s.shard, s.shed[i]);
            }
        }
    });
    let gauges: [PerShard<f64>; 4] = [
        ("skitai_open_connections", "Open client connections.", |s| s.connections as f64),
        ("skitai_requests_in_flight", "Requests being handled.", |s| s.in_flight as f64),
        ("skitai_websocket_open", "Open WebSocket connections.", |s| s.ws_open as f64),
        ("skitai_estimated_wait_seconds", "Estimated wait of a new request (503 above the limit).", |s| {
            s.estimated_wait.as_secs_f64()
        }),
    ];
    for (name, help, get) in gauges {
        family(name, "gauge", help, &mut |o| {
            for s in shards {
                let _ = writeln!(o, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
            }
        });
    }
    family(
        "skitai_request_duration_seconds",
        "summary",
        "Handling time: from the request head to the response being ready.",
        &mut |o| {
            for s in shards {
                for (mount, h) in &s.histograms {
                    let mount = label(mount);
                    for q in QUANTILES {
                        let v = if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e6 };
                        let _ = writeln!(
                            o,
                            "skitai_request_duration_seconds{{shard=\"{}\",mount=\"{mount}\",quantile=\"{q}\"}} {v}",
                            s.shard
                        );
                    }
                    let sum = h.mean() * h.len() as f64 / 1e6;
                    let _ = writeln!(
                        o,
                        "skitai_request_duration_seconds_sum{{shard=\"{}\",mount=\"{mount}\"}} {sum}",
                        s.shard
                    );
                    let _ = writeln!(
                        o,
                        "skitai_request_duration_seconds_count{{shard=\"{}\",mount=\"{mount}\"}} {}",
                        s.shard,
                        h.len()
                    );
                }
            }
        },
    );
    out
}

impl Admin {
    fn uptime_secs(&self) -> u64 {
        SystemTime::now().duration_since(self.started).map(|d| d.as_secs()).unwrap_or(0)
    }

    /// Everything, merged and per shard, as JSON.
    fn json(&self, shards: &[ShardSnapshot]) -> serde_json::Value {
        let per_shard: Vec<serde_json::Value> = shards
            .iter()
            .map(|s| {
                let requests: serde_json::Map<String, serde_json::Value> = PROTOCOLS
                    .iter()
                    .enumerate()
                    .map(|(p, protocol)| {
                        let by_class: serde_json::Map<String, serde_json::Value> = CLASSES
                            .iter()
                            .enumerate()
                            .map(|(c, class)| (class.to_string(), json!(s.requests[p][c])))
                            .collect();
                        (protocol.to_string(), serde_json::Value::Object(by_class))
                    })
                    .collect();
                let shed: serde_json::Map<String, serde_json::Value> =
                    Shed::NAMES.iter().enumerate().map(|(i, n)| (n.to_string(), json!(s.shed[i]))).collect();
                let mounts: serde_json::Map<String, serde_json::Value> =
                    s.histograms.iter().map(|(m, h)| (m.to_string(), json!(Summary::of(h)))).collect();
                json!({
                    "shard": s.shard,
                    "driver": s.driver,
                    "draining": s.draining,
                    "connections": s.connections,
                    "in_flight": s.in_flight,
                    "estimated_wait_ms": s.estimated_wait.as_secs_f64() * 1000.0,
                    "requests": requests,
                    "request_body_bytes": s.request_bytes,
                    "response_body_bytes": s.response_bytes,
                    "accept_errors": s.accept_errors,
                    "shed": shed,
                    "websocket": {"opened": s.ws_opened, "open": s.ws_open,
                                  "messages_received": s.ws_messages_in, "messages_sent": s.ws_messages_out},
                    "log_dropped_lines": s.log_dropped,
                    "mounts": mounts,
                })
            })
            .collect();
        let total_requests: u64 = shards.iter().map(|s| s.requests.iter().flatten().sum::<u64>()).sum();
        let mounts: serde_json::Map<String, serde_json::Value> =
            merged_by_mount(shards).iter().map(|(m, h)| (m.to_string(), json!(Summary::of(h)))).collect();
        json!({
            "name": self.name,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.uptime_secs(),
            "requests": total_requests,
            "connections": shards.iter().map(|s| s.connections).sum::<usize>(),
            "shed": shards.iter().map(|s| s.shed.iter().sum::<u64>()).sum::<u64>(),
            "mounts": mounts,
            "shards": per_shard,
        })
    }

    /// The human status page; refreshes itself.
    fn page(&self, shards: &[ShardSnapshot]) -> String {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut h = String::with_capacity(8192);
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{STATUS_REFRESH_SECS}\">\
             <title>{name} status</title><style>body{{font-family:sans-serif;margin:2em}}\
             table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
             th{{background:#f3f3f3}}td:first-child{{text-align:left}}</style></head><body>\
             <h1>{name}</h1><p>skitai {version} &middot; pid {pid} &middot; up {up} s &middot; {n} shard(s)</p>",
            name = esc(&self.name),
            version = env!("CARGO_PKG_VERSION"),
            pid = std::process::id(),
            up = self.uptime_secs(),
            n = shards.len(),
        );
        h.push_str(
            "<h2>Handling time by mount (ms)</h2><table><tr><th>mount</th><th>requests</th><th>mean</th>\
             <th>p50</th><th>p90</th><th>p99</th><th>p999</th><th>max</th></tr>",
        );
        for (mount, hist) in merged_by_mount(shards) {
            let s = Summary::of(&hist);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                esc(&mount),
                s.count,
                s.mean_ms,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.p999_ms,
                s.max_ms
            );
        }
        h.push_str(
            "</table><h2>Shards</h2><table><tr><th>shard</th><th>driver</th><th>connections</th><th>in flight</th>\
             <th>est. wait (ms)</th><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>shed</th>\
             <th>bytes in</th><th>bytes out</th><th>websockets</th><th>state</th></tr>",
        );
        for s in shards {
            let class = |c: usize| s.requests.iter().map(|row| row[c]).sum::<u64>();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.shard,
                esc(&s.driver),
                s.connections,
                s.in_flight,
                s.estimated_wait.as_secs_f64() * 1000.0,
                class(0),
                class(1),
                class(2),
                class(3),
                class(4),
                s.shed.iter().sum::<u64>(),
                s.request_bytes,
                s.response_bytes,
                s.ws_open,
                if s.draining { "draining" } else { "serving" }
            );
        }
        h.push_str(
            "</table><p><a href=\"metrics\">metrics</a> &middot; <a href=\"metrics.json\">json</a></p></body></html>\n",
        );
        h
    }
}
