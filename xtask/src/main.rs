//! Development tasks.
//!
//! * `synwall-xtask assets DIR` writes `DIR/man/synwall.1` (and one page
//!   per subcommand, `synwall-run.1`, ...) and `DIR/completions/` for bash,
//!   zsh and fish, all from the clap definitions in `synwall::cli`, so they
//!   never drift from `--help`.
//! * `synwall-xtask fuzz-seeds DIR` writes the fuzz targets' seed corpora
//!   (`DIR/<target>/`) from the test corpus (`synwall_bench::corpus`) and
//!   the shipped config, so the seeds follow the tests.

mod seeds;

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [task, dir] = args.as_slice() else {
        eprintln!("usage: synwall-xtask assets|fuzz-seeds DIR");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    match task.as_str() {
        "assets" => {
            man_pages(&dir.join("man"))?;
            completions(&dir.join("completions"))
        }
        "fuzz-seeds" => seeds::write_all(&dir),
        _ => {
            eprintln!("unknown task {task:?}: assets or fuzz-seeds");
            std::process::exit(2);
        }
    }
}

/// synwall.1, and synwall-SUB.1 for each subcommand.
fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = synwall::cli::Cli::command();
    clap_mangen::generate_to(cmd, dir)
}

fn completions(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = synwall::cli::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "synwall", dir)?;
    }
    Ok(())
}
