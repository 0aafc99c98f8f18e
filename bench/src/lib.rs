//! synwall's bench kit: what tests, benches and the flood generator need,
//! and the product never does.
//!
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

pub mod frame;
pub mod live;
pub mod testbed;
