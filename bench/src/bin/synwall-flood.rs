//! synwall-flood: a bounded SYN/ACK flood generator.
//!
//! Two engines: `live` (default) runs bench/bpf/flood.bpf.c through BPF_PROG_RUN
//! in live-frames mode, so the kernel makes and transmits each frame with no
//! socket or copy (the xdp-trafficgen technique); `afxdp` writes frames into
//! an AF_XDP socket's transmit ring (copy mode on veth, slower).
//!
//! Sources and ports are random, with sources only ever inside the
//! benchmarking ranges 198.18.0.0/15 and 2001:2::/48; any other destination
//! or source network is refused. Every run stops by itself after `--count`
//! frames or `--duration` seconds, whichever comes first, and prints one
//! JSON line with what it sent and the rate it reached.
//!
//! For test namespaces only: run it inside the client namespace of a
//! testbed (bench/synack_rate.sh does).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use synwall::wire::tcp::flags;
use synwall::xsk::{Frame, Xsk, XskConfig};
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options};
use synwall_bench::live::{FloodMode, LiveFlood, SourceNet};
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
    /// Frames per ring operation (afxdp engine).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// IPv4 sources from this prefix only (live engine), e.g.
    /// 198.18.7.0/24: inside 198.18.1.0-198.18.255.255. Default: all of
    /// them.
    #[arg(long)]
    source_net: Option<String>,
    /// Offered rate in frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
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
    if a.source_net.is_some() && matches!(a.engine, Engine::Afxdp) {
        return Err("--source-net needs the live engine".into());
    }
    let dst_mac = parse_mac(&a.dst_mac).ok_or("bad --dst-mac")?;
    let src_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", a.interface))
        .ok()
        .and_then(|s| parse_mac(s.trim()))
        .ok_or("cannot read the interface's MAC")?;
    let t0 = Instant::now();
    let sent = match a.engine {
        Engine::Live => live(a, dst_mac, src_mac)?,
        Engine::Afxdp => afxdp(a, dst_mac, src_mac)?,
    };
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.3},\"pps\":{:.0},\"mode\":\"{:?}\",\"engine\":\"{:?}\"}}",
        sent as f64 / secs.min(a.duration).max(1e-9),
        a.mode,
        a.engine
    );
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

/// Live-frames engine: chunks of frames per BPF_PROG_RUN call, paced to
/// `--rate` in 50 ms steps (bursts at the engine's full speed).
fn live(a: &Args, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Result<u64, String> {
    let ifindex = ifindex(&a.interface)?;
    let mode = match a.mode {
        Mode::Syn => FloodMode::Syn,
        Mode::Ack => FloodMode::Ack,
        Mode::Mix => FloodMode::Mix,
    };
    let sources = match &a.source_net {
        None => SourceNet::default(),
        Some(net) => {
            let bad =
                || format!("--source-net {net}: not a prefix inside 198.18.1.0-198.18.255.255");
            let (addr, len) = net.split_once('/').ok_or_else(bad)?;
            let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            if a.dst.is_ipv6() {
                return Err("--source-net is for IPv4 floods".into());
            }
            SourceNet::v4(addr, len).ok_or_else(bad)?
        }
    };
    let mut flood = LiveFlood::new(template(a, dst_mac, src_mac), mode, ifindex, sources)
        .map_err(|e| e.to_string())?;
    // Each BPF_PROG_RUN call costs about 13 ms of set-up here (measured:
    // 388 calls/s with 5 frames each), so frames go in large chunks: 50 ms
    // of the paced rate (20 calls/s), or 131,072 when unpaced (~0.1 s).
    let chunk = if a.rate > 0 {
        (a.rate / 20).clamp(1, 131_072)
    } else {
        131_072
    };
    let deadline = Duration::from_secs_f64(a.duration);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < a.count && t0.elapsed() < deadline {
        if a.rate > 0 {
            let allowed = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
            if sent >= allowed {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
        }
        let n = (a.count - sent).min(chunk);
        flood.send(n as u32).map_err(|e| e.to_string())?;
        sent += n;
    }
    let made = flood.made().map_err(|e| e.to_string())?;
    if made != sent {
        return Err(format!(
            "the program made {made} frames, {sent} were asked for"
        ));
    }
    Ok(sent)
}

/// AF_XDP engine.
fn afxdp(a: &Args, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Result<u64, String> {
    let (mut xsk, mut free) = Xsk::new(&a.interface, a.queue, XskConfig { ring_size: 2048 })
        .map_err(|e| e.to_string())?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut in_flight: Vec<Frame> = Vec::with_capacity(a.batch);
    let (mut sent, mut n) = (0u64, 0u64);
    let deadline = Duration::from_secs_f64(a.duration);
    let t0 = Instant::now();
    // Frames the pacing let go by while the generator was behind.
    let mut forgone = 0u64;
    while sent < a.count && t0.elapsed() < deadline {
        if a.rate > 0 {
            // Pace: never ahead of rate × elapsed, and, like a link, never
            // more than one batch behind: a generator that was held up
            // (another task on its CPU) does not catch up in one burst,
            // which would overflow any receive ring and make the flood's
            // losses the generator's doing.
            let mut allowed = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64 - forgone;
            let most = sent + a.batch as u64;
            if allowed > most {
                forgone += allowed - most;
                allowed = most;
            }
            if sent >= allowed {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        xsk.complete(&mut free, 4 * a.batch);
        let want = (a.count - sent).min(a.batch as u64) as usize;
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
                    // 198.18.0.0/15: 17 random bits; never the destination.
                    let host = (r as u32) & 0x1_ffff;
                    let mut src = (u32::from_be_bytes([198, 18, 0, 0]) | host).to_be_bytes();
                    if src == d.octets() {
                        src[3] ^= 1;
                    }
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
        sent += xsk.transmit(&mut in_flight) as u64;
    }
    // Unsent frames are simply dropped; drain completions briefly so the
    // kernel has sent what was queued before the socket closes.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(200) {
        xsk.wakeup_tx();
        if xsk.complete(&mut free, 4096) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(sent)
}
