//! The `synwall` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};
use synwall::config::Config;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::Core;

/// SYN-flood-resistant TCP front end.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// How log lines are written: "auto" (into the journal, with
    /// priorities, when stderr is a systemd journal stream; otherwise
    /// text), "text" (colours only on a terminal), "json" (one object per
    /// line, for log shippers) or "journald".
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file; errors name the line and column.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Run the handshake core over a capture (pcap or pcapng, Ethernet) and
    /// write what it would transmit to a pcap; prints a JSON summary.
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
    /// Print a new random master secret (32 hex digits) for `cookie.secret_file`.
    GenSecret,
    /// Run the datapath on `[datapath] interface` until SIGINT or SIGTERM,
    /// then detach and print the final counters as JSON.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the counters of a running `synwall run` as JSON.
    Stats {
        /// Configuration of the running instance (for its stats socket).
        #[arg(long, conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// The stats socket itself.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

/// True when stderr is the journal stream systemd gave this service
/// (JOURNAL_STREAM names its device and inode, systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    want.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Logging as `--log-format` says, filtered by RUST_LOG (default info).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let journald = match format {
        LogFormat::Journald => true,
        LogFormat::Auto => stderr_is_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => eprintln!("synwall: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter());
    match format {
        LogFormat::Json => fmt.json().init(),
        _ => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// The configured secret, or a random one with a warning.
fn secret(cfg: &Config) -> anyhow::Result<Secret> {
    match cfg.secret()? {
        Some(s) => Ok(s),
        None => {
            tracing::warn!(
                "no cookie.secret_file configured: using a random secret for this run; \
                 cookies will not validate after a restart or on other nodes"
            );
            Ok(Secret::random()?)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            cfg.secret()?;
            println!(
                "{}: ok (ports {:?}, hand-off {:?}, interface {})",
                file.display(),
                cfg.protect.ports,
                cfg.handoff.mode,
                cfg.datapath.interface
            );
        }
        Command::Replay {
            config,
            input,
            output,
        } => {
            let cfg = load(config.as_ref())?;
            let mut core = Core::new(cfg.core_settings(), secret(&cfg)?);
            let data = std::fs::read(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let out = std::fs::File::create(&output)
                .with_context(|| format!("cannot create {}", output.display()))?;
            let summary = synwall::replay::replay(&mut core, &data, std::io::BufWriter::new(out))?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::GenSecret => println!("{}", Secret::random()?.to_hex()),
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let secret = secret(&cfg)?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handlers")?;
            }
            let last = synwall::run::run(&cfg, secret, stop)?;
            println!("{}", serde_json::to_string(&last)?);
        }
        Command::Stats { config, socket } => {
            let path = match (socket, config) {
                (Some(p), _) => p,
                (None, Some(c)) => Config::load(&c)?.datapath.stats_socket,
                (None, None) => Config::default().datapath.stats_socket,
            };
            let text = synwall::run::read_stats(&path).with_context(|| {
                format!(
                    "cannot read counters from {} (is synwall running?)",
                    path.display()
                )
            })?;
            print!("{text}");
        }
    }
    Ok(())
}
