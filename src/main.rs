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
    /// then detach and print the final counters as JSON. SIGHUP reloads
    /// the configuration file. Exits non-zero when protection stops for
    /// any other reason.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the counters of a running `synwall run` as JSON.
    Stats {
        #[command(flatten)]
        instance: Instance,
    },
    /// Show what a running `synwall run` serves and how: interface, XDP
    /// mode, program and link ids, copy or zero-copy per queue, kernel
    /// features, the secret's fingerprint, epoch and uptime.
    Status {
        #[command(flatten)]
        instance: Instance,
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a running `synwall run` read its configuration file again (as
    /// SIGHUP does) and say whether the new one was applied; exits
    /// non-zero when it was rejected (the old one keeps running).
    Reload {
        #[command(flatten)]
        instance: Instance,
    },
}

/// Which running instance: by its configuration or its stats socket.
#[derive(Debug, clap::Args)]
struct Instance {
    /// Configuration of the running instance (for its stats socket).
    #[arg(long, conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// The stats socket itself.
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Instance {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        Ok(match (&self.socket, &self.config) {
            (Some(p), _) => p.clone(),
            (None, Some(c)) => Config::load(c)?.datapath.stats_socket,
            (None, None) => Config::default().datapath.stats_socket,
        })
    }

    /// Sends `what` to the instance and returns its answer.
    fn ask(&self, what: &str) -> anyhow::Result<String> {
        let path = self.socket()?;
        synwall::run::request(&path, what).with_context(|| {
            format!(
                "cannot reach synwall at {} (is it running?)",
                path.display()
            )
        })
    }
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
            let findings = synwall::check::check(&cfg);
            let mut errors = 0;
            for f in &findings {
                let what = match f.severity {
                    synwall::check::Severity::Error => {
                        errors += 1;
                        "error"
                    }
                    synwall::check::Severity::Warning => "warning",
                };
                eprintln!("{}: {what}: {}", file.display(), f.message);
            }
            if errors > 0 {
                anyhow::bail!("{}: {errors} error(s)", file.display());
            }
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
            let ctl = synwall::run::Control {
                config_path: config,
                stop: Arc::new(AtomicBool::new(false)),
                reload: Arc::new(AtomicBool::new(false)),
            };
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            for (sig, flag) in [
                (SIGINT, &ctl.stop),
                (SIGTERM, &ctl.stop),
                (SIGHUP, &ctl.reload),
            ] {
                signal_hook::flag::register(sig, Arc::clone(flag))
                    .context("installing signal handlers")?;
            }
            let last = synwall::run::run(&cfg, secret, &ctl)?;
            println!("{}", serde_json::to_string(&last)?);
        }
        Command::Stats { instance } => print!("{}", instance.ask("stats")?),
        Command::Status { instance, json } => {
            let text = instance.ask("status")?;
            if json {
                print!("{text}");
            } else {
                let status: synwall::run::Status =
                    serde_json::from_str(&text).context("the running synwall gave no status")?;
                print!("{}", synwall::run::status_text(&status));
            }
        }
        Command::Reload { instance } => {
            let answer: serde_json::Value = serde_json::from_str(&instance.ask("reload")?)
                .context("the running synwall gave no answer")?;
            match answer["reload"].as_str() {
                Some("ok") => println!("reloaded"),
                _ => anyhow::bail!(
                    "reload rejected, the running configuration stays: {}",
                    answer["error"].as_str().unwrap_or("no reason given")
                ),
            }
        }
    }
    Ok(())
}
