//! One worker per receive queue: rx batch → handshake core → SYN-ACK
//! written in place → tx batch, completions back to the fill ring.
//!
//! Nothing on the hot path is shared or locked. Counters live in plain
//! integers and are published to this worker's own atomics once per batch.
//! Control (stop) is read once per batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use crate::proto::handshake::{Core, DropReason, Verdict};
use crate::proto::time::UnixTime;
use crate::xdp::QueueProgress;
use crate::xsk::{Frame, Xsk};

/// How often the kernel's socket statistics are read: they feed the
/// counters and, in synack = "auto", the frames the kernel lost before
/// the ring (which the XDP program must not count as waiting).
const KERNEL_STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long an idle worker sleeps in poll() before re-checking control.
pub const IDLE_POLL_MS: i32 = 100;

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
    /// Drops by reason.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// The kernel's view of the socket (XDP_STATISTICS), refreshed about
    /// once a second: `rx_dropped`, `rx_fill_ring_empty`, `rx_ring_full`,
    /// `tx_invalid`, `tx_ring_empty`.
    pub kernel: std::collections::BTreeMap<&'static str, u64>,
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
                .filter(|&(_, v)| v > 0)
                .collect(),
            kernel: KERNEL_NAMES
                .iter()
                .zip(&self.kernel)
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
}

/// Runs until `ctl.stop` is set.
pub fn run(mut xsk: Xsk, mut free: Vec<Frame>, mut core: Core, ctl: WorkerControl<'_>) {
    let batch = ctl.batch.max(1);
    let mut rx: Vec<Frame> = Vec::with_capacity(batch);
    let mut tx: Vec<Frame> = Vec::with_capacity(4 * batch);
    let mut l = Local::default();
    let mut kernel_at = std::time::Instant::now();
    let mut kernel_lost = 0u64;
    xsk.fill(&mut free);
    while !ctl.stop.load(Ordering::Relaxed) {
        if kernel_at.elapsed() >= KERNEL_STATS_EVERY {
            let k = xsk.kernel_stats();
            kernel_lost = k.rx_dropped + k.rx_ring_full;
            ctl.counters.publish_kernel(k);
            kernel_at = std::time::Instant::now();
        }
        xsk.complete(&mut free, 4 * batch);
        xsk.fill(&mut free);
        // Block in poll() only when nothing waits to be sent; when busy
        // polling, drive the receive work from here and never block.
        if ctl.busy_poll {
            xsk.busy_poll();
        }
        let timeout = if tx.is_empty() && !ctl.busy_poll {
            IDLE_POLL_MS
        } else {
            0
        };
        let n = xsk.receive(&mut rx, batch, timeout);
        if n == 0 {
            l.rx_empty_polls += 1;
            if xsk.fill_needs_wakeup() {
                xsk.wakeup_rx();
            }
        } else {
            l.rx += n as u64;
            let now = UnixTime::now();
            for mut frame in rx.drain(..) {
                let v = xsk.rewrite(&mut frame, |buf, len| {
                    let v = core.handle(now, buf, len);
                    let send = match v {
                        Verdict::Transmit(n) => Some(n),
                        _ => None,
                    };
                    (v, send)
                });
                match v {
                    Verdict::Transmit(_) => {
                        l.synacks += 1;
                        tx.push(frame);
                    }
                    Verdict::Drop(r) => {
                        l.drops[r.index()] += 1;
                        free.push(frame);
                    }
                    Verdict::Pass | Verdict::Established(_) => {
                        l.unexpected += 1;
                        free.push(frame);
                    }
                }
            }
        }
        xsk.transmit(&mut tx);
        if !tx.is_empty() {
            l.tx_ring_full += 1;
            // Do not hoard frames behind a stuck tx ring: keep at most
            // three batches waiting, give the oldest up.
            let excess = tx.len().saturating_sub(3 * batch);
            if excess > 0 {
                l.tx_dropped += excess as u64;
                free.extend(tx.drain(..excess));
            }
            xsk.wakeup_tx();
        }
        ctl.counters.publish(&l);
        if let Some(p) = &ctl.progress {
            p.publish(l.rx + kernel_lost);
        }
    }
    ctl.counters.publish(&l);
    ctl.counters.publish_kernel(xsk.kernel_stats());
}
