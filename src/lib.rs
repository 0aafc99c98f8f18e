//! synwall: a SYN-flood-resistant TCP front end.
//!
//! The crate is layered: [`wire`] views and builds packets, [`proto`] is the
//! sans-IO handshake core (SYN cookies), [`config`] reads the TOML settings,
//! and [`replay`] runs the core over pcap files. [`run`] is the datapath
//! (the XDP program in [`xdp`], AF_XDP sockets in [`xsk`], one [`worker`]
//! per queue, the [`handoff`] to the kernel or the proxy) with its control
//! loop, reload and [`metrics`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod config;
pub mod handoff;
pub mod host;
pub mod metrics;
pub mod proto;
pub mod replay;
pub mod run;
pub mod stats;
pub mod wire;
pub mod worker;
pub mod xdp;
pub mod xsk;
