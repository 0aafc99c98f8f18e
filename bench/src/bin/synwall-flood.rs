//! synwall-flood: a bounded SYN/ACK flood generator.
//!
//! Two engines: `live` (default) runs bench/bpf/flood.bpf.c through BPF_PROG_RUN
//! in live-frames mode, so the kernel makes and transmits each frame with no
//! socket or copy (the xdp-trafficgen technique); `afxdp` writes frames into
//! an AF_XDP socket's transmit ring (copy mode on veth, slower). Where the
//! kernel refuses live frames (some builds of Linux 6.18 do, even to root)
//! the afxdp engine sends instead, and the JSON line says so (`fallback`).
//!
//! Sources and ports are random, with sources only ever inside the
//! benchmarking ranges 198.18.0.0/15 and 2001:2::/48; any other destination
//! or source network is refused. Every run stops by itself after `--count`
//! frames or `--duration` seconds, whichever comes first, and prints one
//! JSON line with the engine, what it sent, the rate it reached and the
//! frames sent per millisecond (p1/p50/p99/max), to show how evenly.
//!
//! For test namespaces only: run it inside the client namespace of a
//! testbed (bench/synack_rate.sh does).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use synwall::wire::tcp::flags;
use synwall::xsk::{Frame, Xsk, XskConfig};
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options};
use synwall_bench::live::{FloodMode, LiveFlood, Pace, SourceNet};
use synwall_bench::{ifindex, in_bench_range};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// BPF_PROG_RUN live frames (XDP_TX out of the interface).
    Live,
    /// AF_XDP transmit ring.
    Afxdp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// SYNs.
    Syn,
    /// ACKs with random (forged) cookies.
    Ack,
    /// SYN and ACK, half each.
    Mix,
}

/// Bounded SYN/ACK flood over AF_XDP (benchmarking address ranges only).
#[derive(Debug, Parser)]
struct Args {
    /// Interface to send on (the client end of a test veth).
    #[arg(long)]
    interface: String,
    /// Transmit queue.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Destination MAC (the server end of the veth).
    #[arg(long)]
    dst_mac: String,
    /// Destination address (in 198.18.0.0/15 or 2001:2::/48).
    #[arg(long)]
    dst: IpAddr,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Mode::Syn)]
    mode: Mode,
    /// Stop after this many frames.
    #[arg(long)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: f64,
    /// How frames are made and sent.
    #[arg(long, value_enum, default_value_t = Engine::Live)]
    engine: Engine,
    /// Frames per ring operation of an unpaced flood (afxdp engine; a
    /// paced one sends what its pace allows).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// IPv4 sources from this prefix only, e.g.
    /// 198.18.7.0/24: inside 198.18.1.0-198.18.255.255. Default: all of
    /// them.
    #[arg(long)]
    source_net: Option<String>,
    /// Offered rate in frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The most frames sent back to back (with --rate). Default: 50 ms of
    /// the rate, sent as bursts while the CPU idles in between. Below 20
    /// ms of the rate (e.g. 64) the frames are spaced evenly, and the
    /// generator's CPU spins between them.
    #[arg(long)]
    burst: Option<u64>,
}

impl Args {
    /// `--burst`, by default 50 ms of the rate.
    fn burst(&self) -> u64 {
        self.burst.unwrap_or((self.rate / 20).max(1))
    }
}

/// Whether bursts of `burst` at `rate` go whole, the generator idle in
/// between (20 ms of the rate or more), rather than spread evenly.
fn whole_bursts(rate: u64, burst: u64) -> bool {
    burst >= rate / 50
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    v.try_into().ok()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("synwall-flood: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), String> {
    if !in_bench_range(a.dst) {
        return Err(format!(
            "destination {} is outside 198.18.0.0/15 and 2001:2::/48",
            a.dst
        ));
    }
    if !(a.duration > 0.0 && a.duration <= 600.0) || a.count == 0 {
        return Err("a flood needs --count > 0 and 0 < --duration <= 600".into());
    }
    if a.rate > 100_000_000 {
        return Err("--rate is at most 100,000,000 frames per second".into());
    }
    if a.burst == Some(0) || a.batch == 0 {
        return Err("--burst and --batch must be at least 1".into());
    }
    let dst_mac = parse_mac(&a.dst_mac).ok_or("bad --dst-mac")?;
    let src_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", a.interface))
        .ok()
        .and_then(|s| parse_mac(s.trim()))
        .ok_or("cannot read the interface's MAC")?;
    // SIGTERM or SIGINT ends the flood early; it still reports.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let (r, engine, fallback) = match a.engine {
        Engine::Live => match live(a, dst_mac, src_mac, &stop)? {
            Ok(r) => (r, Engine::Live, None),
            Err(refused) => {
                eprintln!("synwall-flood: {refused}; the afxdp engine sends instead");
                (
                    afxdp(a, dst_mac, src_mac, &stop)?,
                    Engine::Afxdp,
                    Some(refused),
                )
            }
        },
        Engine::Afxdp => (afxdp(a, dst_mac, src_mac, &stop)?, Engine::Afxdp, None),
    };
    let secs = r.seconds;
    let mut line = format!(
        "{{\"sent\":{},\"seconds\":{secs:.3},\"pps\":{:.0},\"rate\":{},\"mode\":\"{:?}\",\"engine\":\"{engine:?}\"",
        r.sent,
        r.sent as f64 / secs.min(a.duration).max(1e-9),
        a.rate,
        a.mode,
    );
    if let Some(why) = fallback {
        line += &format!(",\"fallback\":{}", serde_json::Value::from(why));
    }
    if let Some(b) = r.burst {
        line += &format!(",\"burst\":{b}");
    }
    if let Some(e) = r.per_ms {
        line += &format!(
            ",\"per_ms\":{{\"p1\":{},\"p50\":{},\"p99\":{},\"max\":{}}}",
            e.p1, e.p50, e.p99, e.max
        );
    }
    println!("{line}}}");
    Ok(())
}

/// The template for the live engine: the base of the source range,
/// source port, sequence and acknowledgment numbers zero.
fn template(a: &Args, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let ip = match a.dst {
        IpAddr::V4(d) => Ip::V4 {
            src: [198, 18, 0, 0],
            dst: d.octets(),
            ttl: 64,
            options: &[],
        },
        IpAddr::V6(d) => {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
            Ip::V6 {
                src,
                dst: d.octets(),
                hop_limit: 64,
                ext: &[],
            }
        }
    };
    let syn = a.mode != Mode::Ack;
    let frame = TcpFrame {
        dst_mac,
        src_mac,
        vlans: &[],
        ip,
        src_port: 0,
        dst_port: a.dport,
        seq: 0,
        ack: 0,
        flags: if syn { flags::SYN } else { flags::ACK },
        window: 64240,
        options: if syn { &client_syn_options::LINUX } else { &[] },
        payload: b"",
    };
    let mut buf = vec![0u8; 256];
    let len = frame.write(&mut buf).unwrap_or(0);
    buf.truncate(len);
    buf
}

/// Live-frames engine; `Ok(Err(why))` when the kernel refuses live frames
/// (nothing sent). The program paces (a token bucket of `--burst`
/// frames, bench/bpf/flood.bpf.c); user space decides when to call it and
/// for how many runs. With a bucket of 20 ms of frames or more it sleeps
/// until the bucket is full and calls for one burst, so the CPU idles
/// between bursts. Otherwise (small bucket, or unpaced) one call runs until
/// a watcher thread ends it with a signal: each BPF_PROG_RUN call costs
/// about 20 ms of set-up here (measured: a 22 ms gap in the frames between
/// two calls), which short calls would turn into gaps in the flood.
fn live(
    a: &Args,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    stop: &AtomicBool,
) -> Result<Result<Report, String>, String> {
    let ifindex = ifindex(&a.interface)?;
    let mode = match a.mode {
        Mode::Syn => FloodMode::Syn,
        Mode::Ack => FloodMode::Ack,
        Mode::Mix => FloodMode::Mix,
    };
    let sources = source_net(a)?;
    let burst = a.burst();
    let deadline = Duration::from_secs_f64(a.duration);
    let pace = Pace {
        rate: a.rate,
        burst,
        limit: a.count,
        duration: deadline,
    };
    // The program's clock starts with this one (the bucket empty).
    let t0 = Instant::now();
    let mut flood = LiveFlood::new(template(a, dst_mac, src_mac), mode, ifindex, sources, pace)
        .map_err(|e| e.to_string())?;
    // One run first (at most one frame): a kernel that refuses live
    // frames says so here.
    match flood.run(1) {
        Err(e) if e.refused() => return Ok(Err(e.to_string())),
        r => r.map_err(|e| e.to_string())?,
    }
    let over =
        |sent: u64| sent >= a.count || t0.elapsed() >= deadline || stop.load(Ordering::Relaxed);
    if a.rate > 0 && whole_bursts(a.rate, burst) {
        in_bursts(&mut flood, a, burst, t0, &over)?;
    } else {
        in_one_call(&mut flood, &over)?;
    }
    Ok(Ok(Report {
        seconds: t0.elapsed().as_secs_f64(),
        sent: flood.sent(),
        burst: (a.rate > 0).then_some(burst),
        per_ms: Some(Evenness::of(flood.per_ms())),
    }))
}

/// Sleeps until the program's bucket is full, then sends it in one call,
/// until `over`.
fn in_bursts(
    flood: &mut LiveFlood,
    a: &Args,
    burst: u64,
    t0: Instant,
    over: &dyn Fn(u64) -> bool,
) -> Result<(), String> {
    loop {
        let sent = flood.sent();
        if over(sent) {
            return Ok(());
        }
        // At most ~0.1 s of the engine's speed per call, so a deadline or
        // a stop is seen soon (the program also stops at the deadline).
        let this_burst = burst.min(a.count - sent).min(131_072);
        // When the program's bucket holds this burst (tokens it forwent
        // while the caller was late do not come back).
        let due = sent + flood.forgone() + this_burst;
        let wait = due as f64 / a.rate as f64 - t0.elapsed().as_secs_f64();
        if wait > 0.0 {
            // In steps, so that a stop or the deadline is seen soon.
            std::thread::sleep(Duration::from_secs_f64(wait.min(0.01)));
            continue;
        }
        flood
            .run(this_burst.min(u64::from(u32::MAX)) as u32)
            .map_err(|e| e.to_string())?;
    }
}

/// Runs the program in calls as long as the kernel allows, until `over`:
/// the kernel's loop stops at a pending signal, so a watcher thread sends
/// this thread SIGUSR1 then.
fn in_one_call(flood: &mut LiveFlood, over: &(dyn Fn(u64) -> bool + Sync)) -> Result<(), String> {
    use nix::sys::pthread::{pthread_kill, pthread_self};
    use nix::sys::signal::Signal;

    // A handler, so that the signal interrupts the call rather than the
    // process.
    signal_hook::flag::register(
        signal_hook::consts::SIGUSR1,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| format!("SIGUSR1 handler: {e}"))?;
    let progress = flood.progress().map_err(|e| e.to_string())?;
    let caller = pthread_self();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| -> Result<(), String> {
            while !done.load(Ordering::Acquire) {
                // Unreadable progress ends the flood too: never a call
                // that nothing ends.
                if over(progress.sent().unwrap_or(u64::MAX)) {
                    // Until the caller has seen it: a signal that lands
                    // between two calls ends neither.
                    pthread_kill(caller, Signal::SIGUSR1).map_err(|e| e.to_string())?;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        let calls = (|| {
            while !over(flood.sent()) {
                flood.run(u32::MAX).map_err(|e| e.to_string())?;
            }
            Ok(())
        })();
        done.store(true, Ordering::Release);
        let watched = watcher
            .join()
            .unwrap_or_else(|_| Err("the watcher panicked".into()));
        calls.and(watched)
    })
}

/// Frames per millisecond of a flood, over its whole milliseconds
/// (the first and the last, partial, left out).
#[derive(Debug)]
struct Evenness {
    p1: u32,
    p50: u32,
    p99: u32,
    max: u32,
}

impl Evenness {
    fn of(per_ms: &[u32]) -> Evenness {
        let last = per_ms.iter().rposition(|&n| n > 0).unwrap_or(0);
        let mut v: Vec<u32> = per_ms.get(1..last).unwrap_or(&[]).to_vec();
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Evenness {
            p1: at(0.01),
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// What a flood did.
struct Report {
    sent: u64,
    /// From the engine's start to its last frame.
    seconds: f64,
    /// The most frames sent back to back, when paced.
    burst: Option<u64>,
    per_ms: Option<Evenness>,
}

/// The `--source-net` of a flood.
fn source_net(a: &Args) -> Result<SourceNet, String> {
    let Some(net) = &a.source_net else {
        return Ok(SourceNet::default());
    };
    let bad = || format!("--source-net {net}: not a prefix inside 198.18.1.0-198.18.255.255");
    let (addr, len) = net.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if a.dst.is_ipv6() {
        return Err("--source-net is for IPv4 floods".into());
    }
    SourceNet::v4(addr, len).ok_or_else(bad)
}

/// The afxdp engine's pace, as the live engine's (bench/bpf/flood.bpf.c):
/// never ahead of rate × elapsed, and, like a link, never more than a
/// `burst` behind: a generator that was held up (another task on its CPU)
/// does not catch up in one go, which would overflow any receive ring and
/// make the flood's losses the generator's doing. A burst of 20 ms of the
/// rate or more goes whole (as the live engine's; in ring-sized pieces
/// when it is larger than the ring), a smaller one in chunks of about 50
/// µs of the rate (a system call each).
struct Pacer {
    rate: u64,
    burst: u64,
    chunk: u64,
    t0: Instant,
    /// Frames the pace let go by while the generator was behind.
    forgone: u64,
}

impl Pacer {
    fn new(rate: u64, burst: u64, ring: u64, t0: Instant) -> Pacer {
        let chunk = if whole_bursts(rate, burst) {
            burst.min(ring)
        } else {
            (rate / 20_000).clamp(1, burst)
        };
        Pacer {
            rate,
            burst,
            chunk,
            t0,
            forgone: 0,
        }
    }

    /// How many frames may go now, `sent` having gone and `left` to go;
    /// or, when too few, how long until they may.
    fn room(&mut self, sent: u64, left: u64) -> Result<u64, Duration> {
        let now = self.t0.elapsed().as_secs_f64();
        let allowed = ((now * self.rate as f64) as u64).saturating_sub(self.forgone);
        let most = sent.saturating_add(self.burst);
        if allowed > most {
            self.forgone += allowed - most;
            return Ok(self.burst);
        }
        let chunk = self.chunk.min(left);
        if allowed >= sent.saturating_add(chunk) {
            return Ok(allowed - sent);
        }
        let due = sent.saturating_add(self.forgone).saturating_add(chunk) as f64 / self.rate as f64;
        Err(Duration::from_secs_f64((due - now).max(0.0)))
    }
}

/// Waits `d` at most and at most 10 ms, so that a stop or the deadline is
/// seen soon: sleeps when it is long, spins when it is short (a sleep
/// overshoots by tens of µs).
fn wait_a_little(d: Duration) {
    if d > Duration::from_micros(150) {
        std::thread::sleep((d - Duration::from_micros(100)).min(Duration::from_millis(10)));
    } else {
        std::hint::spin_loop();
    }
}

/// The afxdp engine's ring size (its UMEM holds twice as many frames).
const RING: u32 = 2048;

/// AF_XDP engine.
fn afxdp(
    a: &Args,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    stop: &AtomicBool,
) -> Result<Report, String> {
    let sources = source_net(a)?;
    let batch = a.batch;
    let (mut xsk, mut free) = Xsk::new(&a.interface, a.queue, XskConfig { ring_size: RING })
        .map_err(|e| synwall::error_chain(&e))?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut in_flight: Vec<Frame> = Vec::with_capacity(batch);
    let mut per_ms = vec![0u32; synwall_bench::live::PACE_SLOTS];
    let (mut sent, mut n) = (0u64, 0u64);
    let deadline = Duration::from_secs_f64(a.duration);
    let t0 = Instant::now();
    let burst = a.burst();
    let mut pacer = (a.rate > 0).then(|| Pacer::new(a.rate, burst, RING as u64, t0));
    while sent < a.count && t0.elapsed() < deadline && !stop.load(Ordering::Relaxed) {
        // Frames this turn may send: a batch, or what the pace allows.
        let room = match pacer.as_mut().map(|p| p.room(sent, a.count - sent)) {
            None => batch as u64,
            Some(Ok(n)) => n,
            Some(Err(wait)) => {
                wait_a_little(wait);
                continue;
            }
        };
        xsk.complete(&mut free, 4 * batch);
        let want = (a.count - sent).min(room) as usize;
        while in_flight.len() < want {
            let Some(mut f) = free.pop() else { break };
            let r = rng.next();
            let syn = match a.mode {
                Mode::Syn => true,
                Mode::Ack => false,
                Mode::Mix => n % 2 == 0,
            };
            n += 1;
            let ip = match a.dst {
                IpAddr::V4(d) => {
                    // As the live engine's: 198.18.1.0 to 198.18.255.255.
                    let src = sources.pick(r as u16);
                    Ip::V4 {
                        src,
                        dst: d.octets(),
                        ttl: 64,
                        options: &[],
                    }
                }
                IpAddr::V6(d) => {
                    let mut src = [0u8; 16];
                    src[..6].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 0]);
                    src[6..14].copy_from_slice(&r.to_be_bytes());
                    src[15] = 2 | ((r >> 7) as u8 & 0xf0);
                    Ip::V6 {
                        src,
                        dst: d.octets(),
                        hop_limit: 64,
                        ext: &[],
                    }
                }
            };
            let frame = TcpFrame {
                dst_mac,
                src_mac,
                vlans: &[],
                ip,
                src_port: 1024 + ((r >> 17) as u16 % 64512),
                dst_port: a.dport,
                seq: (r >> 32) as u32,
                ack: if syn { 0 } else { rng.next() as u32 },
                flags: if syn { flags::SYN } else { flags::ACK },
                window: 64240,
                options: if syn { &client_syn_options::LINUX } else { &[] },
                payload: b"",
            };
            xsk.rewrite(&mut f, |buf, _| ((), frame.write(buf).ok()));
            in_flight.push(f);
        }
        if in_flight.is_empty() {
            xsk.wakeup_tx();
            continue;
        }
        let n = xsk.transmit(&mut in_flight);
        sent += n as u64;
        if let Some(slot) = per_ms.get_mut(t0.elapsed().as_millis() as usize) {
            *slot += n as u32;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    // Unsent frames are simply dropped; drain completions briefly so the
    // kernel has sent what was queued before the socket closes.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(200) {
        xsk.wakeup_tx();
        if xsk.complete(&mut free, 4096) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(Report {
        sent,
        seconds,
        burst: (a.rate > 0).then_some(burst),
        per_ms: Some(Evenness::of(&per_ms)),
    })
}
