//! The command line's definition (clap), shared by the `synwall` binary
//! and the packaging task that makes its man pages and shell completions.

#![allow(missing_docs, reason = "clap turns the doc comments into --help")]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// SYN-flood-resistant TCP front end.
///
/// synwall answers every SYN to the protected ports with a SYN cookie from
/// an XDP program and AF_XDP workers, and hands each connection whose ACK
/// proves its cookie to the local kernel or to upstreams through its own
/// proxy. It is configured in /etc/synwall/synwall.toml (every key is
/// documented in the shipped file) and runs as the systemd unit
/// synwall.service: `systemctl reload synwall` applies a new file without
/// detaching XDP.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// How log lines are written: "auto" (into the journal, with
    /// priorities, when stderr is a systemd journal stream; otherwise
    /// text), "text" (colours only on a terminal), "json" (one object per
    /// line, for log shippers) or "journald".
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration file for this host.
    ///
    /// Syntax, unknown keys and ranges (errors name the line and column),
    /// then what would make `run` fail or misbehave here: the secret file
    /// (readable, well-formed, mode 0600), upstream names, the interface
    /// and its queues, the CPUs, the kernel, listeners behind kernel mode
    /// and an exposed metrics endpoint. Exits 1 on any error; warnings
    /// alone pass.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Replay a capture through the handshake core.
    ///
    /// Runs the core over a capture (pcap or pcapng, Ethernet) and writes
    /// what it would transmit to a pcap; prints a JSON summary.
    Replay {
        /// Configuration (defaults when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Input capture.
        #[arg(long)]
        input: PathBuf,
        /// Output pcap of the replies.
        #[arg(long)]
        output: PathBuf,
    },
    /// Print a new random master secret for `cookie.secret_file`.
    ///
    /// 32 hex digits (128 bits) from the system's random source. Write it
    /// with mode 0600: `(umask 077; synwall gen-secret > /etc/synwall/secret)`.
    GenSecret,
    /// Run the datapath (what synwall.service starts).
    ///
    /// Attaches to `[datapath] interface` and serves until SIGINT or
    /// SIGTERM, then detaches and prints the final counters as JSON
    /// (exit 0). SIGHUP reloads the configuration file. Any failure that
    /// ends protection exits non-zero, so that systemd restarts it.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the counters of a running `synwall run` as JSON.
    ///
    /// The same counters are served to Prometheus when `[metrics] listen`
    /// is set.
    Stats {
        #[command(flatten)]
        instance: Instance,
    },
    /// Show what a running `synwall run` serves and how.
    ///
    /// Interface, XDP mode, program and link ids, copy or zero-copy per
    /// queue, kernel features, the secret's fingerprint (never the
    /// secret), the key epoch and the uptime.
    Status {
        #[command(flatten)]
        instance: Instance,
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Say whether a running `synwall run` should take traffic.
    ///
    /// For a routing daemon's check (BIRD, ExaBGP, FRR): exits 0 and
    /// prints "healthy: ..." when the XDP program is attached, every
    /// datapath thread makes progress, XDP's answers leave the interface,
    /// hand-offs do not all fail and the secret's fingerprint is
    /// `[cookie] expected_fingerprint` (when set); otherwise exits 1 and
    /// prints "unhealthy: " and why, also when synwall does not answer
    /// within `--timeout`.
    Health {
        #[command(flatten)]
        instance: Instance,
        /// Print JSON (every check) instead of one line.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Make a running `synwall run` read its configuration file again.
    ///
    /// As SIGHUP does, and says whether the new file was applied; exits
    /// non-zero when it was rejected (the old one keeps running). Keys
    /// that only a restart can change are named in the error.
    Reload {
        #[command(flatten)]
        instance: Instance,
    },
}

/// Which running instance: by its configuration or its stats socket.
#[derive(Debug, clap::Args)]
pub struct Instance {
    /// Configuration of the running instance (for its stats socket).
    #[arg(long, conflicts_with = "socket")]
    pub config: Option<PathBuf>,
    /// The stats socket itself.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}
