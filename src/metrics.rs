//! The Prometheus endpoint (`[metrics] listen`): every counter of a
//! [`Snapshot`] in the text exposition format (0.0.4), encoded by
//! `prometheus-client`, with node_exporter-style names and units. Every
//! label value is always present, zeros included, so that a rate over a
//! reason that has not happened yet is 0, not missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::handoff::proxy::ProxySnapshot;
use crate::proto::handshake::DropReason;
use crate::stats::Snapshot;
use crate::worker::WorkerSnapshot;

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// One sample: its labels and value.
type Sample = (Labels, u64);

/// The text exposition of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

/// Writes one metric family.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<Sample>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, v) in samples {
        let sample = m.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => ConstGauge::new(v as i64).encode(sample)?,
            _ => ConstCounter::new(v).encode(sample)?,
        }
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: Vec<Sample>) -> Fr {
    family(enc, name, help, None, MetricType::Counter, samples)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: Vec<Sample>) -> Fr {
    family(enc, name, help, None, MetricType::Gauge, samples)
}

type Fr = Result<(), std::fmt::Error>;

/// One sample per `(value, count)`, labelled `key="value"`.
fn labelled<const N: usize>(key: &'static str, values: [(&str, u64); N]) -> Vec<Sample> {
    values
        .into_iter()
        .map(|(v, n)| (vec![(key, v.to_string())], n))
        .collect()
}

fn one(v: u64) -> Vec<Sample> {
    vec![(Vec::new(), v)]
}

/// The workers' plain counters: name, help, and the value of one worker.
#[allow(clippy::type_complexity)]
const WORKER_COUNTERS: [(&str, &str, fn(&WorkerSnapshot) -> u64); 6] = [
    (
        "synwall_worker_received_packets",
        "Frames a worker took from its AF_XDP socket.",
        |c| c.rx,
    ),
    (
        "synwall_worker_synacks",
        "SYN-ACKs a worker queued for transmission.",
        |c| c.synacks,
    ),
    (
        "synwall_worker_tx_ring_full",
        "Batches that found the tx ring full.",
        |c| c.tx_ring_full,
    ),
    (
        "synwall_worker_tx_dropped_packets",
        "SYN-ACKs given up because the tx ring stayed full.",
        |c| c.tx_dropped,
    ),
    (
        "synwall_worker_empty_polls",
        "Polls that returned no frame.",
        |c| c.rx_empty_polls,
    ),
    (
        "synwall_worker_unexpected_packets",
        "Frames a worker cannot answer nor hand back (not SYNs).",
        |c| c.unexpected,
    ),
];

impl SnapshotCollector {
    /// Build info, uptime, the cookie epoch and secrets.
    fn process(&self, enc: &mut DescriptorEncoder) -> Fr {
        let s = &self.0;
        let info = vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("interface", s.interface.clone()),
            ("xdp_mode", s.xdp_mode.to_string()),
        ];
        gauge(
            enc,
            "synwall_build_info",
            "synwall's version and what it serves; always 1.",
            vec![(info, 1)],
        )?;
        family(
            enc,
            "synwall_uptime",
            "Seconds since the datapath started.",
            Some(Unit::Seconds),
            MetricType::Gauge,
            one(s.uptime_secs),
        )?;
        gauge(
            enc,
            "synwall_cookie_epoch",
            "The key epoch cookies are minted with now.",
            one(s.epoch),
        )?;
        let secrets = std::iter::once(("mint", &s.secret_fingerprint))
            .chain(s.previous_secret_fingerprint.iter().map(|f| ("accept", f)))
            .map(|(role, f)| {
                (
                    vec![("fingerprint", f.clone()), ("role", role.to_string())],
                    1,
                )
            })
            .collect();
        gauge(
            enc,
            "synwall_cookie_secret_info",
            "Fingerprints of the cookie secrets (docs/cookie.md §2): the one that \
             mints, and the accepted one during a rollover; always 1.",
            secrets,
        )
    }

    /// The attack detector, the XDP answers' state, reloads.
    fn states(&self, enc: &mut DescriptorEncoder) -> Fr {
        let s = &self.0;
        gauge(
            enc,
            "synwall_under_attack",
            "1 while the [attack] detector sees an attack.",
            one(u64::from(s.under_attack)),
        )?;
        counter(
            enc,
            "synwall_attacks",
            "Attacks the [attack] detector saw since the start.",
            one(s.attacks),
        )?;
        let answers = s.xdp_answers.as_ref();
        let state = answers.map_or("on", |a| a.state.as_str());
        gauge(
            enc,
            "synwall_xdp_answers",
            "1 for the state of the XDP program's answers: on, or off (they were \
             seen not to leave the interface; the workers and the kernel answer).",
            ["on", "off"]
                .into_iter()
                .map(|st| (vec![("state", st.to_string())], u64::from(st == state)))
                .collect(),
        )?;
        gauge(
            enc,
            "synwall_xdp_answers_leaving",
            "1 while the XDP program's answers are known to leave the interface, \
             so synack = \"auto\" answers in XDP first (judged for \"auto\" only).",
            one(u64::from(answers.is_some_and(|a| a.leaving))),
        )?;
        counter(
            enc,
            "synwall_xdp_tx_failed_packets",
            "XDP_TX frames the interface's driver failed to send since the start.",
            one(answers.map_or(0, |a| a.failed)),
        )?;
        let reloads = vec![
            (vec![("result", "ok".to_string())], s.reloads_ok),
            (vec![("result", "failed".to_string())], s.reloads_failed),
        ];
        counter(
            enc,
            "synwall_reloads",
            "Reloads applied (ok) and rejected (failed).",
            reloads,
        )
    }

    /// The XDP and TC programs' counters.
    fn xdp(&self, enc: &mut DescriptorEncoder) -> Fr {
        let s = &self.0;
        let get = |name: &str| s.xdp.get(name).copied().unwrap_or(0);
        let rx = crate::xdp::COUNTER_NAMES[crate::xdp::counter::RX];
        counter(
            enc,
            "synwall_xdp_received_packets",
            "Packets the XDP program saw.",
            one(get(rx)),
        )?;
        let events: Vec<_> = crate::xdp::counter::EVENTS
            .iter()
            .map(|&i| &crate::xdp::COUNTER_NAMES[i])
            .collect();
        let (handoff, verdicts): (Vec<_>, Vec<_>) = crate::xdp::COUNTER_NAMES
            .iter()
            .filter(|n| **n != rx && !events.contains(n))
            .partition(|n| n.starts_with("handoff_"));
        let rows = |names: Vec<&&'static str>, label: &'static str, strip: &str| -> Vec<Sample> {
            names
                .into_iter()
                .map(|n| {
                    (
                        vec![(label, n.trim_start_matches(strip).to_string())],
                        get(n),
                    )
                })
                .collect()
        };
        counter(
            enc,
            "synwall_xdp_packets",
            "Packets by the XDP program's verdict (README: what each counter means).",
            rows(verdicts, "verdict", ""),
        )?;
        counter(
            enc,
            "synwall_handoff_packets",
            "ACKs the TC program handled, by result.",
            rows(handoff, "result", "handoff_"),
        )?;
        counter(
            enc,
            "synwall_xdp_events",
            "What the XDP and TC programs count beside the verdicts (README).",
            rows(events, "event", ""),
        )
    }

    /// Per worker (queue) counters.
    fn workers(&self, enc: &mut DescriptorEncoder) -> Fr {
        let ws = &self.0.workers;
        for (name, help, value) in WORKER_COUNTERS {
            let samples = ws
                .iter()
                .map(|w| (vec![("queue", w.queue.to_string())], value(&w.counters)))
                .collect();
            counter(enc, name, help, samples)?;
        }
        self.worker_events(enc)
    }

    /// Per worker (queue) counters by reason or event.
    fn worker_events(&self, enc: &mut DescriptorEncoder) -> Fr {
        let ws = &self.0.workers;
        let mut drops = Vec::new();
        let mut kernel = Vec::new();
        let mut repair = Vec::new();
        for w in ws {
            let q = w.queue.to_string();
            for (outcome, &v) in &w.counters.repair {
                let labels = vec![("queue", q.clone()), ("outcome", outcome.to_string())];
                repair.push((labels, v));
            }
            for r in DropReason::ALL {
                let v = w.counters.drops.get(r.as_str()).copied().unwrap_or(0);
                drops.push((
                    vec![("queue", q.clone()), ("reason", r.as_str().to_string())],
                    v,
                ));
            }
            for (event, &v) in &w.counters.kernel {
                kernel.push((vec![("queue", q.clone()), ("event", event.to_string())], v));
            }
        }
        counter(
            enc,
            "synwall_worker_drops",
            "Frames a worker dropped, by reason.",
            drops,
        )?;
        counter(
            enc,
            "synwall_afxdp_kernel_events",
            "The kernel's AF_XDP socket statistics (XDP_STATISTICS), by event.",
            kernel,
        )?;
        counter(
            enc,
            "synwall_worker_repair",
            "The repair hand-off: connections rebuilt (repaired), rebuilds that \
             failed, early segments fed back in (injected), and ACKs left for the \
             client to send again while the proxy was behind (busy).",
            repair,
        )
    }

    /// Proxy mode (zeros in kernel mode). Every field of the snapshot is
    /// served (the test `every_proxy_counter_is_served`).
    fn proxy(&self, enc: &mut DescriptorEncoder) -> Fr {
        let p = self.0.proxy.clone().unwrap_or_default();
        proxy_sessions(enc, p.sessions, p.active)?;
        let ended = labelled(
            "reason",
            [
                ("completed", p.completed),
                ("rejected", p.rejected),
                ("upstream_unavailable", p.upstream_unavailable),
                ("upstream_error", p.upstream_errors),
                ("client_error", p.client_errors),
                ("idle_timeout", p.idle_timeouts),
                ("internal_error", p.internal_errors),
                ("rejected_source", p.rejected_source),
                ("shutdown", p.shutdown_resets),
            ],
        );
        counter(
            enc,
            "synwall_proxy_sessions_ended",
            "Proxy sessions ended, by reason.",
            ended,
        )?;
        proxy_troubles(enc, &p)?;
        let bytes = labelled(
            "direction",
            [
                ("to_upstream", p.bytes_to_upstream),
                ("to_client", p.bytes_to_client),
            ],
        );
        family(
            enc,
            "synwall_proxy_relayed",
            "Payload bytes relayed, by direction.",
            Some(Unit::Bytes),
            MetricType::Counter,
            bytes,
        )
    }
}

/// The proxy's sessions: accepted, and open now.
fn proxy_sessions(enc: &mut DescriptorEncoder, sessions: u64, active: u64) -> Fr {
    counter(
        enc,
        "synwall_proxy_sessions",
        "Client connections the proxy accepted.",
        one(sessions),
    )?;
    gauge(
        enc,
        "synwall_proxy_sessions_active",
        "Proxy sessions open now.",
        one(active),
    )
}

/// The proxy's failed upstream connects, its times full, its accept errors.
fn proxy_troubles(enc: &mut DescriptorEncoder, p: &ProxySnapshot) -> Fr {
    let connects = labelled(
        "result",
        [
            ("failed", p.upstream_connect_failures),
            ("timeout", p.upstream_connect_timeouts),
        ],
    );
    counter(
        enc,
        "synwall_proxy_upstream_connect_errors",
        "Upstream connect attempts that failed, by result.",
        connects,
    )?;
    counter(
        enc,
        "synwall_proxy_upstream_retries",
        "Rounds of connect attempts begun again because the upstreams are busy \
         (one answered within 10 s): a client waits.",
        one(p.upstream_retries),
    )?;
    counter(
        enc,
        "synwall_proxy_full",
        "Times the proxy filled up (max_connections sessions open) and new \
         clients waited in the backlog.",
        one(p.full),
    )?;
    counter(
        enc,
        "synwall_proxy_accept_errors",
        "accept() failures of the proxy's listeners.",
        one(p.accept_errors),
    )
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fr {
        self.process(&mut enc)?;
        self.states(&mut enc)?;
        self.xdp(&mut enc)?;
        self.workers(&mut enc)?;
        self.proxy(&mut enc)
    }
}

/// The endpoint's listener: HTTP/1.1 answers with `Connection: close`,
/// one client at a time, each held to a time limit in all (reading its
/// request and writing the answer), so that a client that never sends or
/// never reads cannot hold the endpoint. (tiny_http, used before, could not
/// bound a write: one such client froze the thread that answered.)
#[derive(Debug)]
pub struct Server(TcpListener);

impl Server {
    /// Listens on `addr`.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(Server(l))
    }

    /// Answers the clients that come within `wait` (and returns then,
    /// however many keep coming), each given `limit` to send its request
    /// and `limit` to take its answer; `snapshot` is taken once per scrape
    /// (`None`: answered 503). Every accept that fails (no client waiting
    /// included) goes to `failed`.
    pub fn serve(
        &self,
        wait: Duration,
        limit: Duration,
        snapshot: impl Fn() -> Option<Snapshot>,
        mut failed: impl FnMut(std::io::Error),
    ) {
        let give_up = Instant::now() + wait;
        while Instant::now() < give_up {
            match self.0.accept() {
                Ok((conn, _)) => answer(conn, limit, &snapshot),
                Err(e) => {
                    failed(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// One client: its request's head within `limit`, then the answer, within
/// `limit` of the snapshot.
fn answer(mut conn: TcpStream, limit: Duration, snapshot: &impl Fn() -> Option<Snapshot>) {
    let _ = conn.set_nonblocking(false);
    let Some(head) = read_head(&mut conn, Instant::now() + limit) else {
        return;
    };
    let mut words = head.split(' ');
    let path = words.nth(1).map(|p| p.split('?').next().unwrap_or(p));
    let (status, content_type, body) = match (head.starts_with("GET "), path) {
        (true, Some("/metrics")) => match snapshot() {
            Some(s) => ("200 OK", CONTENT_TYPE, render(&s)),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "synwall: the control loop did not answer\n".to_string(),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "synwall: GET /metrics\n".to_string(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    write_by(&mut conn, reply.as_bytes(), Instant::now() + limit);
}

/// Time left until `until`, if any.
fn left(until: Instant) -> Option<Duration> {
    until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// The request's head (up to its blank line, 8 KiB at most), read by `until`.
fn read_head(conn: &mut TcpStream, until: Instant) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return None;
        }
        conn.set_read_timeout(Some(left(until)?)).ok()?;
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Writes `data` by `until`, or as much as the client took.
fn write_by(conn: &mut TcpStream, mut data: &[u8], until: Instant) {
    while !data.is_empty() {
        let Some(t) = left(until) else {
            return;
        };
        if conn.set_write_timeout(Some(t)).is_err() {
            return;
        }
        match conn.write(data) {
            Ok(0) | Err(_) => return,
            Ok(n) => data = &data[n..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of an idle eth0 with `proxy` and `xdp_answers`.
    fn snapshot(
        proxy: Option<ProxySnapshot>,
        xdp_answers: Option<crate::stats::XdpAnswers>,
    ) -> Snapshot {
        Snapshot {
            interface: "eth0".into(),
            xdp_mode: "native",
            workers: Vec::new(),
            xdp: Default::default(),
            proxy,
            uptime_secs: 0,
            epoch: 0,
            secret_fingerprint: String::new(),
            previous_secret_fingerprint: None,
            reloads_ok: 0,
            reloads_failed: 0,
            under_attack: false,
            attacks: 0,
            xdp_answers,
        }
    }

    /// Each counter of the proxy's snapshot reaches the exposition.
    #[test]
    fn every_proxy_counter_is_served() {
        let fields = serde_json::to_value(ProxySnapshot::default()).unwrap();
        for field in fields.as_object().unwrap().keys() {
            let mut v = fields.clone();
            v[field] = 987_654_321.into();
            let proxy: ProxySnapshot = serde_json::from_value(v).unwrap();
            let snapshot = snapshot(Some(proxy), None);
            assert!(
                render(&snapshot).contains(" 987654321\n"),
                "{field} is not served"
            );
        }
    }

    /// Whether XDP answers are known to leave reaches the exposition.
    #[test]
    fn answers_known_to_leave_are_served() {
        for leaving in [false, true] {
            let answers = crate::stats::XdpAnswers {
                state: "on".into(),
                watched: true,
                reason: String::new(),
                driver: "veth".into(),
                failed: 0,
                leaving,
            };
            let snapshot = snapshot(None, Some(answers));
            let want = format!("\nsynwall_xdp_answers_leaving {}\n", u8::from(leaving));
            assert!(render(&snapshot).contains(&want), "{want}");
        }
    }
}
