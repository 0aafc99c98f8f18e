//! One worker per receive queue: rx batch → handshake core → SYN-ACK
//! written in place → tx batch, completions back to the fill ring.
//!
//! Nothing on the hot path is shared or locked. Counters live in plain
//! integers and are published to this worker's own atomics once per batch.
//! Control (stop) is read once per batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::handoff::repair::{Engine, Outcome};
use crate::proto::cookie::Secrets;
use crate::proto::handshake::{Core, DropReason, Settings, Verdict};
use crate::proto::time::UnixTime;
use crate::xdp::QueueProgress;
use crate::xsk::{Frame, Xsk};

/// How often the kernel's socket statistics are read: they feed the
/// counters and, in synack = "auto", the frames the kernel lost before
/// the ring (which the XDP program must not count as waiting).
const KERNEL_STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long an idle worker sleeps in poll() before re-checking control.
pub const IDLE_POLL_MS: i32 = 100;

/// The settings and secret the workers' cores run with. A reload publishes
/// new ones; each worker sees the change at its next batch (one relaxed
/// load of the generation per batch) and builds a new core from them.
#[derive(Debug)]
pub struct SharedCore {
    generation: AtomicU64,
    current: Mutex<Arc<(Settings, Secrets)>>,
}

impl SharedCore {
    /// The settings and secret of the start.
    pub fn new(settings: Settings, secrets: Secrets) -> SharedCore {
        SharedCore {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new((settings, secrets))),
        }
    }

    /// Hands new settings and a new secret to every worker.
    pub fn publish(&self, settings: Settings, secrets: Secrets) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Arc::new((settings, secrets));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A core with the current settings; `seen` becomes their generation.
    pub fn core(&self, seen: &mut u64) -> Core {
        *seen = self.generation.load(Ordering::Acquire);
        let current = Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner));
        Core::new(current.0.clone(), current.1.clone())
    }

    /// As [`SharedCore::core`], only if the settings changed since `seen`.
    pub fn refresh(&self, seen: &mut u64) -> Option<Core> {
        (self.generation.load(Ordering::Relaxed) != *seen).then(|| self.core(seen))
    }
}

/// Counters of one worker, readable from other threads.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    rx: AtomicU64,
    synacks: AtomicU64,
    tx_ring_full: AtomicU64,
    tx_dropped: AtomicU64,
    rx_empty_polls: AtomicU64,
    unexpected: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    kernel: [AtomicU64; 5],
    repair: [AtomicU64; REPAIR_NAMES.len()],
}

/// A snapshot of a worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSnapshot {
    /// Frames received from the AF_XDP socket.
    pub rx: u64,
    /// SYN-ACKs queued for transmission.
    pub synacks: u64,
    /// Batches that found the tx ring full.
    pub tx_ring_full: u64,
    /// SYN-ACKs given up because the tx ring stayed full.
    pub tx_dropped: u64,
    /// Polls that returned no frame.
    pub rx_empty_polls: u64,
    /// Frames the core passed or accepted, which an AF_XDP worker cannot
    /// hand back to the kernel (the XDP program only sends SYNs here).
    pub unexpected: u64,
    /// Drops by reason (every reason, zeros included).
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// The kernel's view of the socket (XDP_STATISTICS), refreshed about
    /// once a second: `rx_dropped`, `rx_fill_ring_empty`, `rx_ring_full`,
    /// `tx_invalid`, `tx_ring_empty`.
    pub kernel: std::collections::BTreeMap<&'static str, u64>,
    /// The repair hand-off (`[handoff] engine = "repair"`): connections
    /// rebuilt and handed to the proxy, rebuilds that failed, segments of
    /// rebuilt connections fed back into the kernel, and ACKs left for the
    /// client to send again while the proxy was behind (busy).
    pub repair: std::collections::BTreeMap<&'static str, u64>,
}

/// The repair counters' names, in [`Outcome`] order.
const REPAIR_NAMES: [&str; 4] = ["repaired", "failed", "injected", "busy"];

fn repair_index(o: Outcome) -> Option<usize> {
    match o {
        Outcome::Repaired => Some(0),
        Outcome::Failed => Some(1),
        Outcome::Injected => Some(2),
        Outcome::Busy => Some(3),
        Outcome::Unknown => None,
    }
}

const KERNEL_NAMES: [&str; 5] = [
    "rx_dropped",
    "rx_fill_ring_empty",
    "rx_ring_full",
    "tx_invalid",
    "tx_ring_empty",
];

impl WorkerCounters {
    fn publish(&self, l: &Local) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.rx, l.rx);
        set(&self.synacks, l.synacks);
        set(&self.tx_ring_full, l.tx_ring_full);
        set(&self.tx_dropped, l.tx_dropped);
        set(&self.rx_empty_polls, l.rx_empty_polls);
        set(&self.unexpected, l.unexpected);
        for (a, &v) in self.drops.iter().zip(&l.drops) {
            set(a, v);
        }
        for (a, &v) in self.repair.iter().zip(&l.repair) {
            set(a, v);
        }
    }

    fn publish_kernel(&self, k: crate::xsk::KernelStats) {
        let v = [
            k.rx_dropped,
            k.rx_fill_ring_empty,
            k.rx_ring_full,
            k.tx_invalid,
            k.tx_ring_empty,
        ];
        for (a, v) in self.kernel.iter().zip(v) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// A number that grows on every pass of the worker's loop (busy or
    /// idle, at least every [`IDLE_POLL_MS`]): what the watchdog watches.
    pub fn progress(&self) -> u64 {
        self.rx.load(Ordering::Relaxed) + self.rx_empty_polls.load(Ordering::Relaxed)
    }

    /// SYN-ACKs queued so far.
    pub fn synacks(&self) -> u64 {
        self.synacks.load(Ordering::Relaxed)
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerSnapshot {
            rx: get(&self.rx),
            synacks: get(&self.synacks),
            tx_ring_full: get(&self.tx_ring_full),
            tx_dropped: get(&self.tx_dropped),
            rx_empty_polls: get(&self.rx_empty_polls),
            unexpected: get(&self.unexpected),
            drops: DropReason::ALL
                .iter()
                .zip(&self.drops)
                .map(|(r, a)| (r.as_str(), get(a)))
                .collect(),
            kernel: KERNEL_NAMES
                .iter()
                .zip(&self.kernel)
                .map(|(n, a)| (*n, get(a)))
                .collect(),
            repair: REPAIR_NAMES
                .iter()
                .zip(&self.repair)
                .map(|(n, a)| (*n, get(a)))
                .collect(),
        }
    }
}

/// The worker's private tally.
#[derive(Debug, Default)]
struct Local {
    rx: u64,
    synacks: u64,
    tx_ring_full: u64,
    tx_dropped: u64,
    rx_empty_polls: u64,
    unexpected: u64,
    drops: [u64; DropReason::ALL.len()],
    repair: [u64; REPAIR_NAMES.len()],
}

/// What a worker needs besides its socket.
#[derive(Debug)]
pub struct WorkerControl<'a> {
    /// Set to stop the worker.
    pub stop: &'a AtomicBool,
    /// Where the counters are published.
    pub counters: &'a WorkerCounters,
    /// Frames per batch.
    pub batch: usize,
    /// Where the XDP program learns how far this worker has got
    /// (synack = "auto"); `None` in the other modes.
    pub progress: Option<QueueProgress<'a>>,
    /// Busy-poll the socket's NAPI context instead of sleeping in poll().
    pub busy_poll: bool,
    /// Where the core's settings come from (and change on a reload).
    pub core: &'a SharedCore,
    /// `[handoff] engine = "repair"`: builds the connections whose ACKs
    /// XDP sends here.
    pub repair: Option<Engine>,
}

/// The frames a worker holds between ring operations.
struct Rings {
    rx: Vec<Frame>,
    tx: Vec<Frame>,
    free: Vec<Frame>,
}

/// Runs until `ctl.stop` is set.
pub fn run(mut xsk: Xsk, free: Vec<Frame>, mut ctl: WorkerControl<'_>) {
    let batch = ctl.batch.max(1);
    let mut f = Rings {
        rx: Vec::with_capacity(batch),
        tx: Vec::with_capacity(4 * batch),
        free,
    };
    let mut l = Local::default();
    let mut seen = 0;
    let mut core = ctl.core.core(&mut seen);
    let mut kernel_at = std::time::Instant::now();
    let mut kernel_lost = 0u64;
    let mut repair = ctl.repair.take();
    xsk.fill(&mut f.free);
    while !ctl.stop.load(Ordering::Relaxed) {
        if kernel_at.elapsed() >= KERNEL_STATS_EVERY {
            let k = xsk.kernel_stats();
            kernel_lost = k.rx_dropped + k.rx_ring_full;
            ctl.counters.publish_kernel(k);
            kernel_at = std::time::Instant::now();
        }
        xsk.complete(&mut f.free, 4 * batch);
        xsk.fill(&mut f.free);
        if receive(&mut xsk, &mut f, &mut l, &ctl) > 0 {
            // A reload that came while this worker slept in poll() applies
            // to the frames that woke it.
            if let Some(c) = ctl.core.refresh(&mut seen) {
                core = c;
            }
            answer(&mut xsk, &mut core, &mut f, &mut l, repair.as_mut());
        }
        transmit(&mut xsk, &mut f, &mut l, batch);
        ctl.counters.publish(&l);
        if let Some(p) = &ctl.progress {
            p.publish(l.rx + kernel_lost);
        }
    }
    ctl.counters.publish(&l);
    ctl.counters.publish_kernel(xsk.kernel_stats());
}

/// Takes up to one batch from the rx ring (waiting in poll() when idle);
/// returns how many frames came.
fn receive(xsk: &mut Xsk, f: &mut Rings, l: &mut Local, ctl: &WorkerControl) -> usize {
    // Block in poll() only when nothing waits to be sent; when busy
    // polling, drive the receive work from here and never block.
    if ctl.busy_poll {
        xsk.busy_poll();
    }
    let timeout = if f.tx.is_empty() && !ctl.busy_poll {
        IDLE_POLL_MS
    } else {
        0
    };
    let n = xsk.receive(&mut f.rx, ctl.batch.max(1), timeout);
    if n == 0 {
        l.rx_empty_polls += 1;
        if xsk.fill_needs_wakeup() {
            xsk.wakeup_rx();
        }
    }
    l.rx += n as u64;
    n
}

/// Answers the received frames: SYN-ACKs written in place onto the tx
/// list, connections to rebuild to the repair engine, everything else
/// back to the free list.
fn answer(
    xsk: &mut Xsk,
    core: &mut Core,
    f: &mut Rings,
    l: &mut Local,
    mut repair: Option<&mut Engine>,
) {
    let now = UnixTime::now();
    for mut frame in f.rx.drain(..) {
        let (v, handed) = xsk.rewrite(&mut frame, |buf, len| {
            let v = core.handle(now, buf, len);
            let handed = repair
                .as_deref_mut()
                .map_or(Outcome::Unknown, |e| match &v {
                    Verdict::Established(h) => e.established(h, &buf[..len]),
                    Verdict::Drop(DropReason::BadCookie) => e.other(&buf[..len]),
                    _ => Outcome::Unknown,
                });
            let send = match v {
                Verdict::Transmit(n) => Some(n),
                _ => None,
            };
            ((v, handed), send)
        });
        if let Some(i) = repair_index(handed) {
            l.repair[i] += 1;
            f.free.push(frame);
            continue;
        }
        match v {
            Verdict::Transmit(_) => {
                l.synacks += 1;
                f.tx.push(frame);
            }
            Verdict::Drop(r) => {
                l.drops[r.index()] += 1;
                f.free.push(frame);
            }
            Verdict::Pass | Verdict::Established(_) => {
                l.unexpected += 1;
                f.free.push(frame);
            }
        }
    }
}

/// Queues the waiting SYN-ACKs on the tx ring; what does not fit waits,
/// up to three batches, and the oldest beyond that are given up.
fn transmit(xsk: &mut Xsk, f: &mut Rings, l: &mut Local, batch: usize) {
    xsk.transmit(&mut f.tx);
    if !f.tx.is_empty() {
        l.tx_ring_full += 1;
        // Do not hoard frames behind a stuck tx ring.
        let excess = f.tx.len().saturating_sub(3 * batch);
        if excess > 0 {
            l.tx_dropped += excess as u64;
            f.free.extend(f.tx.drain(..excess));
        }
        xsk.wakeup_tx();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cookie::Secret;
    use crate::proto::handshake::PortSet;

    #[test]
    fn a_published_change_reaches_each_worker_once() {
        let shared = SharedCore::new(Settings::default(), Secret::from_bytes([1; 16]).into());
        let (mut a, mut b) = (0, 0);
        let _ = shared.core(&mut a);
        let _ = shared.core(&mut b);
        assert!(shared.refresh(&mut a).is_none(), "nothing changed");
        let settings = Settings {
            ports: PortSet::new(&[81]),
            ..Settings::default()
        };
        shared.publish(settings, Secret::from_bytes([2; 16]).into());
        assert!(shared.refresh(&mut a).is_some());
        assert!(shared.refresh(&mut a).is_none(), "only once");
        assert!(shared.refresh(&mut b).is_some(), "every worker");
        let now = shared.current.lock().unwrap();
        assert!(now.0.ports.contains(81) && !now.0.ports.contains(80));
        assert_eq!(now.1.mint, Secret::from_bytes([2; 16]));
    }
}
