//! pcap replay on arbitrary capture bytes (pcap or pcapng): an error or a
//! summary that accounts for every frame, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, Settings};

fuzz_target!(|data: &[u8]| {
    let mut core = Core::new(
        Settings::default(),
        Secret::from_bytes(*b"synwall-test-key"),
    );
    let _ = synwall::replay::replay(&mut core, data, std::io::sink());
});
