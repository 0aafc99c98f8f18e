//! The cookie test vectors of docs/cookie.md (`tests/vectors/cookie.json`).
//!
//! The same file drives the BPF implementation's tests, so the two cannot
//! drift. The file is data, checked here; to regenerate it after an
//! intentional change of the spec (bump its version!), run
//! `SYNWALL_WRITE_VECTORS=1 cargo test --test cookie_vectors`.

mod common;

use std::net::IpAddr;

use common::vectors;

use serde_json::{Value, json};
use synwall::proto::cookie::{self, Flow, KeyRing, MssTable, Secret, SynAttrs};
use synwall::proto::time::UnixTime;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/cookie.json");
const SECRET: &str = "000102030405060708090a0b0c0d0e0f";
/// The other secret of the rollover checks.
const ROLLOVER_SECRET: &str = "f0e0d0c0b0a090807060504030201000";
const ROTATION: u64 = 60;
const SKEW: u64 = 10;
const NOW: u64 = 1_790_000_000;

fn flow(v: &Value) -> Flow {
    let ip = |k: &str| v[k].as_str().unwrap().parse::<IpAddr>().unwrap();
    let (sport, dport) = (
        v["sport"].as_u64().unwrap() as u16,
        v["dport"].as_u64().unwrap() as u16,
    );
    match (ip("src"), ip("dst")) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Flow::V4 {
            src: s.octets(),
            dst: d.octets(),
            sport,
            dport,
        },
        (IpAddr::V6(s), IpAddr::V6(d)) => Flow::V6 {
            src: s.octets(),
            dst: d.octets(),
            sport,
            dport,
        },
        _ => panic!("mixed families in {v}"),
    }
}

fn check(d: &Value, ch: &Value) -> Result<SynAttrs, cookie::CookieError> {
    let ring = KeyRing::at(
        &vectors::validator(d, ch),
        &vectors::schedule(d),
        UnixTime(ch["now"].as_u64().unwrap()),
    );
    cookie::check(
        &ring,
        &flow(ch),
        ch["client_isn"].as_u64().unwrap() as u32,
        ch["cookie_isn"].as_u64().unwrap() as u32,
        ch["tsecr"].as_u64().map(|t| t as u32),
    )
}

fn attrs_json(a: &SynAttrs) -> Value {
    json!({"mss_index": a.mss_index, "wscale": a.wscale, "sack": a.sack, "ecn": a.ecn, "timestamps": a.timestamps})
}

fn attrs_from(v: &Value) -> SynAttrs {
    SynAttrs {
        mss_index: v["mss_index"].as_u64().unwrap() as u8,
        wscale: v["wscale"].as_u64().map(|w| w as u8),
        sack: v["sack"].as_bool().unwrap(),
        ecn: v["ecn"].as_bool().unwrap(),
        timestamps: v["timestamps"].as_bool().unwrap(),
    }
}

/// Computes every vector from its inputs with the Rust implementation.
fn compute() -> Value {
    let secret = Secret::from_hex(SECRET).unwrap();
    let epoch = UnixTime(NOW).epoch(ROTATION);
    let keys: Vec<Value> = [0u64, 1, epoch - 1, epoch]
        .iter()
        .map(|&e| {
            let (k0, k1) = secret.epoch_key(e).words();
            json!({"epoch": e, "k0": format!("{k0:016x}"), "k1": format!("{k1:016x}")})
        })
        .collect();

    let flows = [
        ("198.18.0.2", "198.18.0.1", 40000, 80),
        ("198.19.255.254", "198.18.0.1", 1, 80),
        ("198.18.7.9", "198.18.0.1", 65535, 8080),
        ("2001:2::2", "2001:2::1", 40000, 80),
        ("2001:2:0:ffff::1234", "2001:2::1", 33333, 443),
    ];
    let mut x: u32 = 0x2545_f491;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut cookies = Vec::new();
    for (i, (src, dst, sport, dport)) in flows.iter().enumerate() {
        for j in 0..4u32 {
            let r = next();
            let attrs = SynAttrs {
                mss_index: (r & 7) as u8,
                wscale: if j == 1 {
                    None
                } else {
                    Some(((r >> 3) % 15) as u8)
                },
                sack: r & 0x100 != 0,
                ecn: r & 0x200 != 0,
                timestamps: j % 2 == 0,
            };
            let now = NOW + u64::from(next() % 60) - (NOW % 60);
            let client_isn = next();
            let v = json!({"name": format!("flow{i}-{j}"), "src": src, "dst": dst, "sport": sport, "dport": dport,
                           "now": now, "client_isn": client_isn, "attrs": attrs_json(&attrs)});
            let key = secret.epoch_key(UnixTime(now).epoch(ROTATION));
            let c = cookie::generate(&key, &flow(&v), client_isn, &attrs);
            let mut v = v;
            v["isn"] = json!(c.isn);
            v["tsval"] = json!(c.tsval);
            cookies.push(v);
        }
    }

    // Checks: each cookie at several times and with one thing changed.
    let mut checks = Vec::new();
    for c in cookies.iter().step_by(3) {
        let now = c["now"].as_u64().unwrap();
        let isn = c["isn"].as_u64().unwrap() as u32;
        let tsval = c["tsval"].as_u64().map(|t| t as u32);
        let cisn = c["client_isn"].as_u64().unwrap() as u32;
        let base = |name: &str, at: u64, cookie_isn: u32, tsecr: Option<u32>, client_isn: u32| {
            json!({"name": format!("{}-{name}", c["name"].as_str().unwrap()),
                   "src": c["src"], "dst": c["dst"], "sport": c["sport"], "dport": c["dport"],
                   "now": at, "client_isn": client_isn, "cookie_isn": cookie_isn, "tsecr": tsecr,
                   "validator": "one"})
        };
        // The times around the cookie's epoch [start, start + ROTATION) at
        // which it is and is not accepted (docs/cookie.md §2).
        let start = now - now % ROTATION;
        let at = |name: &str, t: u64| base(name, t, isn, tsval, cisn);
        checks.push(at("same-epoch", now));
        checks.push(at("next-epoch", start + 2 * ROTATION - SKEW - 1));
        checks.push(at("expired", start + 2 * ROTATION - SKEW));
        checks.push(at("skew-ahead", start - SKEW));
        checks.push(at("from-future", start - SKEW - 1));
        checks.push(at("epoch-ago", start - ROTATION));
        checks.push(base("isn-bit", now, isn ^ 0x0040_0000, tsval, cisn));
        checks.push(base("attr-bit", now, isn ^ 0x4, tsval, cisn));
        checks.push(base("client-isn", now, isn, tsval, cisn.wrapping_add(1)));
        match tsval {
            Some(t) => {
                checks.push(base("tsecr-bit", now, isn, Some(t ^ 0x8000_0000), cisn));
                checks.push(base("ts-stripped", now, isn, None, cisn));
            }
            None => checks.push(base("ts-added", now, isn, Some(0), cisn)),
        }
        for (name, who, t) in [
            ("rollover", "rollover", now),
            (
                "rollover-next-epoch",
                "rollover",
                start + 2 * ROTATION - SKEW - 1,
            ),
            ("other-secret", "other", now),
        ] {
            let mut v = at(name, t);
            v["validator"] = json!(who);
            checks.push(v);
        }
    }
    let mut d = json!({
        "spec": "docs/cookie.md, cookie version 1",
        "secret": SECRET,
        "rollover_secret": ROLLOVER_SECRET,
        "rotation_secs": ROTATION,
        "skew_secs": SKEW,
        "mss_table": MssTable::default().entries(),
        "keys": keys,
        "cookies": cookies,
    });
    for ch in &mut checks {
        let r = check(&d, ch);
        ch["valid"] = json!(r.is_ok());
        ch["attrs"] = r.map_or(Value::Null, |a| attrs_json(&a));
    }
    d["checks"] = json!(checks);
    d
}
#[test]
fn vectors_match_the_implementation() {
    let computed = compute();
    if std::env::var_os("SYNWALL_WRITE_VECTORS").is_some() {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("wrote {PATH}");
    }
    let text = std::fs::read_to_string(PATH).expect("tests/vectors/cookie.json exists");
    let stored: Value = serde_json::from_str(&text).unwrap();

    // Re-run the stored inputs against the implementation, one by one, so a
    // failure names the vector.
    let secret = Secret::from_hex(stored["secret"].as_str().unwrap()).unwrap();
    let rot = stored["rotation_secs"].as_u64().unwrap();
    for k in stored["keys"].as_array().unwrap() {
        let (k0, k1) = secret.epoch_key(k["epoch"].as_u64().unwrap()).words();
        assert_eq!(format!("{k0:016x}"), k["k0"], "key of {k}");
        assert_eq!(format!("{k1:016x}"), k["k1"], "key of {k}");
    }
    for c in stored["cookies"].as_array().unwrap() {
        let key = secret.epoch_key(UnixTime(c["now"].as_u64().unwrap()).epoch(rot));
        let got = cookie::generate(
            &key,
            &flow(c),
            c["client_isn"].as_u64().unwrap() as u32,
            &attrs_from(&c["attrs"]),
        );
        assert_eq!(
            u64::from(got.isn),
            c["isn"].as_u64().unwrap(),
            "{}",
            c["name"]
        );
        assert_eq!(
            got.tsval.map(u64::from),
            c["tsval"].as_u64(),
            "{}",
            c["name"]
        );
    }
    let mut valid = 0;
    for ch in stored["checks"].as_array().unwrap() {
        let r = check(&stored, ch);
        assert_eq!(r.is_ok(), ch["valid"].as_bool().unwrap(), "{}", ch["name"]);
        if let Ok(a) = r {
            valid += 1;
            assert_eq!(attrs_json(&a), ch["attrs"], "{}", ch["name"]);
        }
    }
    // The table must exercise both outcomes.
    assert!(valid > 0 && valid < stored["checks"].as_array().unwrap().len());
    assert_eq!(
        stored, computed,
        "stored vectors differ from the implementation's"
    );
}

#[test]
fn independent_reference_agrees() {
    // tests/vectors/reference.py implements docs/cookie.md from the text with
    // the Python standard library only; it must accept every stored vector.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/reference.py");
    let out = std::process::Command::new("python3")
        .args([script, PATH])
        .output()
        .expect("python3 runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "reference.py disagrees: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
