//! synwall-testbed-xdp: attaches one of the testbed's XDP programs
//! (bench/bpf/testbed.bpf.c) to an interface of a test namespace, holds it
//! until SIGINT/SIGTERM or `--seconds`, whichever comes first, then
//! detaches and prints its counters as one JSON line.
//!
//!   --program drop|pass|bounce|reflect
//!                                   on the server veth: the testbed's limits
//!   --program sink                  on the client veth: answers to spoofed
//!                                   sources dropped before the stack
//!
//! For test namespaces only (the bench scripts and tests run it inside
//! theirs); it refuses addresses outside 198.18.0.0/15 and 2001:2::/48.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use synwall_bench::testbed::{Addresses, Attached, Role};
use synwall_bench::{ifindex, in_bench_range};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Program {
    Drop,
    Pass,
    Bounce,
    Reflect,
    /// The kernel's own SYN cookies from XDP (the raw helpers).
    #[value(name = "kcookie")]
    KernelCookie,
    Sink,
}

/// Attach a testbed XDP program for a bounded time.
#[derive(Debug, Parser)]
struct Args {
    /// Interface (in this network namespace).
    #[arg(long)]
    interface: String,
    /// Which program.
    #[arg(long, value_enum)]
    program: Program,
    /// Detach after this many seconds at the latest.
    #[arg(long)]
    seconds: f64,
    /// The server's IPv4 address.
    #[arg(long, default_value = "198.18.0.1")]
    server: Ipv4Addr,
    /// The protected port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// The client's IPv4 address (the sink passes its traffic).
    #[arg(long, default_value = "198.18.0.2")]
    client: Ipv4Addr,
    /// The client's IPv6 address.
    #[arg(long, default_value = "2001:2::2")]
    client6: Ipv6Addr,
    /// Generic XDP instead of native: answers (XDP_TX) take the kernel's
    /// transmit path and so reach a veth peer that has no XDP program.
    #[arg(long)]
    generic: bool,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("synwall-testbed-xdp: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), String> {
    if ![a.server.into(), a.client.into(), a.client6.into()]
        .into_iter()
        .all(in_bench_range)
    {
        return Err("addresses must be in 198.18.0.0/15 and 2001:2::/48".into());
    }
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    let ifindex = ifindex(&a.interface)?;
    let role = match a.program {
        Program::Drop => Role::Drop,
        Program::Pass => Role::Pass,
        Program::Bounce => Role::Bounce,
        Program::Reflect => Role::Reflect,
        Program::KernelCookie => Role::KernelCookie,
        Program::Sink => Role::Sink,
    };
    let addrs = Addresses {
        server4: a.server,
        port: a.port,
        client4: a.client,
        client6: a.client6,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let attached =
        Attached::new(role, ifindex, &addrs, a.generic).map_err(|e| format!("{e}: {e:?}"))?;
    // Tells a waiting script that the program is in place.
    println!("{{\"attached\":\"{}\"}}", a.interface);
    let deadline = Duration::from_secs_f64(a.seconds);
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = attached.counters().map_err(|e| e.to_string())?;
    drop(attached);
    println!(
        "{{\"program\":\"{:?}\",\"rx\":{},\"as_sent\":{},\"altered\":{},\"dropped\":{},\"passed\":{}}}",
        a.program, c.rx, c.as_sent, c.altered, c.dropped, c.passed
    );
    Ok(())
}
