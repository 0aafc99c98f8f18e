//! synwall: a SYN-flood-resistant TCP front end.
//!
//! The crate is layered: [`wire`] views and builds packets, [`proto`] is the
//! sans-IO handshake core (SYN cookies), [`config`] reads the TOML settings,
//! and [`replay`] runs the core over pcap files.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod handoff;
pub mod host;
pub mod proto;
pub mod replay;
pub mod run;
pub mod wire;
pub mod worker;
pub mod xdp;
pub mod xsk;
