//! synwall's bench kit: what tests, benches and the flood generator need,
//! and the product never does.
//!
//! * [`corpus`] is the test corpus (frames, mutations) the differential
//!   check and the fuzz seeds draw from;
//! * [`frame`] builds whole client frames (SYNs and ACKs shaped like real
//!   stacks', with VLAN tags, IPv4 options, IPv6 extension headers);
//! * [`live`] is the live-frames flood engine (bench/bpf/flood.bpf.c run
//!   through `BPF_PROG_RUN`);
//! * [`testbed`] holds the testbed's XDP programs: the physical limits on
//!   the server veth and the sink on the client veth.
//!
//! The `synwall-flood` binary and the criterion benches live here too, so
//! installing synwall installs none of it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod corpus;
pub mod frame;
pub mod live;
pub mod testbed;

use std::net::IpAddr;

/// True inside the benchmarking ranges 198.18.0.0/15 (RFC 2544) and
/// 2001:2::/48 (RFC 5180), the only addresses the bench kit sends to or
/// from.
pub fn in_bench_range(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0
        }
    }
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32, String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("cannot read the index of interface {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_benchmark_ranges() {
        for ok in [
            "198.18.0.1",
            "198.19.255.254",
            "2001:2::1",
            "2001:2:0:ffff::1",
        ] {
            assert!(in_bench_range(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "198.20.0.1",
            "198.17.255.255",
            "10.0.0.1",
            "2001:3::1",
            "2001:2:1::1",
            "::1",
        ] {
            assert!(!in_bench_range(bad.parse().unwrap()), "{bad}");
        }
    }
}
