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
pub mod log_every;
pub mod metrics;
pub mod proto;
pub mod replay;
pub mod run;
pub mod stats;
pub mod wire;
pub mod worker;
pub mod xdp;
pub mod xsk;

/// An error and its causes, each once: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("stats socket /run/x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("no such device"));
        assert_eq!(error_chain(&e), "stats socket /run/x: no such device");
    }
}
