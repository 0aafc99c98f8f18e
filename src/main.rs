//! The `synwall` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use synwall::cli::{Cli, Command, Instance, LogFormat};
use synwall::config::Config;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::Core;

/// Where the instance's stats socket is.
fn socket_of(i: &Instance) -> anyhow::Result<PathBuf> {
    Ok(match (&i.socket, &i.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => Config::load(c)?.datapath.stats_socket,
        (None, None) => Config::default().datapath.stats_socket,
    })
}

/// Sends `what` to the instance and returns its answer.
fn ask(i: &Instance, what: &str) -> anyhow::Result<String> {
    let path = socket_of(i)?;
    synwall::run::request(&path, what).with_context(|| {
        format!(
            "cannot reach synwall at {} (is it running?)",
            path.display()
        )
    })
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
        Command::CheckConfig { file } => check_config(&file)?,
        Command::Replay {
            config,
            input,
            output,
        } => {
            let cfg = load(config.as_ref())?;
            let mut core = Core::new(cfg.core_settings(), cfg.secrets(secret(&cfg)?)?);
            let data = std::fs::read(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let out = std::fs::File::create(&output)
                .with_context(|| format!("cannot create {}", output.display()))?;
            let summary = synwall::replay::replay(&mut core, &data, std::io::BufWriter::new(out))?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::GenSecret => println!("{}", Secret::random()?.to_hex()),
        Command::Run { config } => run_datapath(config)?,
        Command::Stats { instance } => print!("{}", ask(&instance, "stats")?),
        Command::Status { instance, json } => {
            let text = ask(&instance, "status")?;
            if json {
                print!("{text}");
            } else {
                let status: synwall::run::Status =
                    serde_json::from_str(&text).context("the running synwall gave no status")?;
                print!("{}", synwall::run::status_text(&status));
            }
        }
        Command::Reload { instance } => reload(&instance)?,
        Command::Health {
            instance,
            json,
            timeout,
        } => health(&instance, json, std::time::Duration::from_secs(timeout))?,
    }
    Ok(())
}

/// `check-config`: each finding on stderr; an error if any is one.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(file)?;
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
    Ok(())
}

/// `run`: the datapath until SIGINT or SIGTERM, reloading on SIGHUP; the
/// last counters on stdout.
fn run_datapath(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let secrets = cfg.secrets(secret(&cfg)?)?;
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
        signal_hook::flag::register(sig, Arc::clone(flag)).context("installing signal handlers")?;
    }
    let last = synwall::run::run(&cfg, secrets, &ctl)?;
    println!("{}", serde_json::to_string(&last)?);
    Ok(())
}

/// `reload`: asks the running synwall; an error if it rejected the file.
/// `health`: the running instance's verdict, or unhealthy when it gives
/// none (or its socket cannot be found); prints one line (or JSON) either
/// way, and exits 1 when unhealthy.
fn health(instance: &Instance, json: bool, wait: std::time::Duration) -> anyhow::Result<()> {
    let health = socket_of(instance)
        .map_err(|e| format!("{e:#}"))
        .and_then(|path| {
            synwall::run::request_within(&path, "health", wait)
                .map_err(|e| format!("no answer from synwall at {}: {e}", path.display()))
        })
        .and_then(|text| {
            serde_json::from_str::<synwall::run::Health>(&text)
                .map_err(|e| format!("no health in synwall's answer ({e})"))
        })
        .unwrap_or_else(|reason| synwall::run::Health {
            healthy: false,
            reason,
            checks: Vec::new(),
        });
    if json {
        println!("{}", serde_json::to_string(&health)?);
    } else {
        println!("{}", health.line());
    }
    if !health.healthy {
        std::process::exit(1);
    }
    Ok(())
}

fn reload(instance: &Instance) -> anyhow::Result<()> {
    let answer: serde_json::Value = serde_json::from_str(&ask(instance, "reload")?)
        .context("the running synwall gave no answer")?;
    match answer["reload"].as_str() {
        Some("ok") => println!("reloaded"),
        _ => anyhow::bail!(
            "reload rejected, the running configuration stays: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ),
    }
    Ok(())
}
