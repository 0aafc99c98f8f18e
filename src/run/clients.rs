//! The control plane's clients: the stats socket (`synwall stats`,
//! `status`, `reload`) and the metrics endpoint, each served from a thread
//! of its own. No client (one that never sends its request, one that never
//! reads its answer) holds up the control loop: these threads do the
//! clients' I/O, with time limits, and ask the control loop only for the
//! answer, over a channel the loop drains between its other duties.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::Scope;
use std::time::Duration;

use super::{Snapshot, Threads};
use crate::log_every::LogEvery;
use crate::metrics;

/// What a client's thread asks the control loop.
#[derive(Debug)]
pub(super) enum Ask {
    /// A stats-socket request; the answer is the line to write back.
    Socket(Request, Sender<String>),
    /// A scrape: the counters.
    Snapshot(Sender<Snapshot>),
}

/// What a client asks on the stats socket.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    Stats,
    Reload,
    Status,
    Health,
}

/// How long a client may take to send its request, or to take each part
/// of its answer.
const CLIENT_IO: Duration = Duration::from_secs(2);
/// How long the stats socket's thread waits for the control loop's answer:
/// a reload may wait on the proxy's acknowledgement (5 s) and the XDP maps.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// How long a scrape waits for the counters: well within a scraper's own
/// timeout, so it gets a 503 rather than nothing.
const SCRAPE_WAIT: Duration = Duration::from_secs(1);
/// How often the threads look at the stop flag while no client comes.
const IDLE: Duration = Duration::from_millis(50);

/// Asks the control loop through `asks`; its answer, or `None` when it
/// gave none within `wait` (or is gone).
fn ask<T>(asks: &Sender<Ask>, wait: Duration, make: impl FnOnce(Sender<T>) -> Ask) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    asks.send(make(tx)).ok()?;
    rx.recv_timeout(wait).ok()
}

/// The stats socket's thread: one client at a time, each bounded by
/// [`CLIENT_IO`].
pub(super) fn spawn_stats<'s>(
    threads: &mut Threads<'s>,
    s: &'s Scope<'s, '_>,
    listener: UnixListener,
    asks: Sender<Ask>,
    stop: &'s AtomicBool,
) {
    threads.spawn(s, "synwall-stats".into(), move || {
        let mut failures = AcceptFailures::new("stats socket");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => answer_socket(conn, &asks),
                Err(e) => {
                    if failed_accept(&e) {
                        failures.note(e);
                    }
                    std::thread::sleep(IDLE);
                }
            }
        }
        Ok(())
    })
}

fn answer_socket(mut conn: UnixStream, asks: &Sender<Ask>) {
    // The listener is non-blocking; its connections need not be.
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_write_timeout(Some(CLIENT_IO));
    let request = read_request(&mut conn);
    let reply = ask(asks, ANSWER_WAIT, |tx| Ask::Socket(request, tx)).unwrap_or_else(|| {
        serde_json::json!({ "error": "the control loop did not answer" }).to_string()
    });
    let _ = conn.write_all(reply.as_bytes());
    let _ = conn.write_all(b"\n");
}

/// Reads a client's one-line request, within [`CLIENT_IO`]: "reload",
/// "status", or anything else (nothing at all included) for the counters.
pub(super) fn read_request(conn: &mut UnixStream) -> Request {
    let until = std::time::Instant::now() + CLIENT_IO;
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    while line.len() < 64 && !line.contains(&b'\n') {
        // 200 ms for each part (a client that sends nothing asks for the
        // counters), 2 s in all.
        let left = until.saturating_duration_since(std::time::Instant::now());
        let part = left.min(Duration::from_millis(200));
        if part.is_zero() || conn.set_read_timeout(Some(part)).is_err() {
            break;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
        }
    }
    match String::from_utf8_lossy(&line).trim() {
        "reload" => Request::Reload,
        "status" => Request::Status,
        "health" => Request::Health,
        _ => Request::Stats,
    }
}

/// The metrics endpoint's thread. A client that reads its answer slowly
/// holds up other scrapes, never the control loop.
pub(super) fn spawn_metrics<'s>(
    threads: &mut Threads<'s>,
    s: &'s Scope<'s, '_>,
    server: metrics::Server,
    asks: Sender<Ask>,
    stop: &'s AtomicBool,
) {
    threads.spawn(s, "synwall-metrics".into(), move || {
        let mut failures = AcceptFailures::new("metrics endpoint");
        while !stop.load(Ordering::Relaxed) {
            let snapshot = || ask(&asks, SCRAPE_WAIT, Ask::Snapshot);
            server.serve(IDLE, CLIENT_IO, snapshot, |e| {
                if failed_accept(&e) {
                    failures.note(e);
                }
            });
        }
        Ok(())
    })
}

/// Whether an accept's error is the listener's failure: not a client that
/// gave up before it was taken, nor a signal.
fn failed_accept(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, Interrupted, WouldBlock};
    !matches!(e.kind(), WouldBlock | ConnectionAborted | Interrupted)
}

/// How often at most a listener's failing accepts are logged.
const ACCEPT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A listener's failed accepts (out of descriptors, say): logged as a
/// warning with their count, at most every [`ACCEPT_FAILURE_LOG_EVERY`].
struct AcceptFailures {
    what: &'static str,
    log: LogEvery,
}

impl AcceptFailures {
    fn new(what: &'static str) -> AcceptFailures {
        AcceptFailures {
            what,
            log: LogEvery::new(ACCEPT_FAILURE_LOG_EVERY),
        }
    }

    fn note(&mut self, e: std::io::Error) {
        if let Some(failures) = self.log.note() {
            tracing::warn!(error = %e, failures, "the {} cannot accept clients", self.what);
        }
    }
}

/// The control loop's side: waits up to `wait` for the first ask, then
/// takes every one that is there; `answer` answers each.
pub(super) fn take_asks(asks: &Receiver<Ask>, wait: Duration, mut answer: impl FnMut(Ask)) {
    match asks.recv_timeout(wait) {
        Ok(a) => answer(a),
        Err(RecvTimeoutError::Timeout) => return,
        // No client thread (none configured): the wait alone.
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(wait);
            return;
        }
    }
    while let Ok(a) = asks.try_recv() {
        answer(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that gave up before its accept is not the listener's
    /// failure; running out of descriptors is.
    #[test]
    fn only_the_listeners_own_failures_count() {
        use std::io::{Error, ErrorKind};
        assert!(!failed_accept(&Error::from(ErrorKind::ConnectionAborted)));
        assert!(!failed_accept(&Error::from(ErrorKind::WouldBlock)));
        assert!(failed_accept(&Error::from_raw_os_error(libc::EMFILE)));
    }
}
