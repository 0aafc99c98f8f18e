//! The config parser on arbitrary text: a clear error or a config, never a
//! panic; a config that parses has no restart-only change against itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synwall::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, std::path::Path::new("fuzz.toml")) {
        Ok(cfg) => assert!(cfg.restart_only_changes(&cfg).is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
