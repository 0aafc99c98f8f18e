//! Reading the cookie test vectors (`tests/vectors/cookie.json`) the same
//! way in the Rust and the BPF vector tests.

use serde_json::Value;
use synwall::proto::cookie::{KeySchedule, Secret, Secrets};

/// The secrets a check's validator holds: its `validator` is "one" (the
/// vectors' secret; also what a cookie vector, which has none, means),
/// "rollover" (minting the rollover secret, accepting the vectors' one) or
/// "other" (the rollover secret alone).
pub fn validator(d: &Value, v: &Value) -> Secrets {
    let hex = |k: &str| Secret::from_hex(d[k].as_str().unwrap()).unwrap();
    match v["validator"].as_str().unwrap_or("one") {
        "one" => hex("secret").into(),
        "rollover" => Secrets {
            mint: hex("rollover_secret"),
            accept: Some(hex("secret")),
        },
        "other" => hex("rollover_secret").into(),
        w => panic!("unknown validator {w}"),
    }
}

/// The vectors' key schedule.
pub fn schedule(d: &Value) -> KeySchedule {
    KeySchedule::new(
        d["rotation_secs"].as_u64().unwrap(),
        d["skew_secs"].as_u64().unwrap(),
    )
}
