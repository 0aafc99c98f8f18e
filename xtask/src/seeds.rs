//! The fuzz targets' seed corpora (fuzz/fuzz_targets/), one folder a target.

use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, Settings};
use synwall::proto::time::UnixTime;
use synwall_bench::corpus;

/// The fuzz core target's time and secret (fuzz/fuzz_targets/core.rs), so
/// the seeds' ACKs carry cookies valid there.
const NOW: UnixTime = UnixTime(1_790_000_000);
const SECRET: [u8; 16] = *b"synwall-test-key";

/// Writes every target's seeds under `dir`.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    let mut core = Core::new(Settings::default(), Secret::from_bytes(SECRET));
    let frames = corpus::frames(&mut core, NOW);
    let put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)
    };
    for (name, f) in &frames {
        put("wire", name, f)?;
        // The core target's first byte: bit 0 verification off, bit 1 fix
        // the checksums first.
        put("core", name, &[&[0u8][..], f].concat())?;
        put("core", &format!("{name}-fixed"), &[&[2u8][..], f].concat())?;
    }
    put("replay", "corpus.pcap", &pcap(&frames)?)?;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/synwall.toml");
    put("config", "synwall.toml", &std::fs::read(config)?)?;
    for (name, text) in CONFIGS {
        put("config", name, text.as_bytes())?;
    }
    for (name, seed) in proxy_pairs() {
        put("proxy_protocol", name, &seed)?;
    }
    Ok(())
}

/// Configs with the sections the shipped file leaves commented out.
const CONFIGS: [(&str, &str); 3] = [
    (
        "proxy.toml",
        "[handoff]\nmode = \"proxy\"\nupstreams = [\"198.18.1.1:8080\", \"[2001:2::9]:80\"]\nproxy_protocol = true\n",
    ),
    (
        "attack.toml",
        "[attack]\nmode = \"auto\"\nenter_syn_rate = 1000\nsyns_per_source = 50\n[reflection]\nsynacks_per_prefix = 100\nprefix_v4 = 24\n",
    ),
    (
        "lists.toml",
        "[protect]\nports = [80, 443]\nallow = [\"198.18.5.0/24\", \"2001:2::/64\"]\ndeny = [\"198.19.0.0/16\"]\n",
    ),
];

/// `frames` as one pcap capture, a millisecond apart.
fn pcap(frames: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let err = |e: pcap_file::PcapError| std::io::Error::other(e.to_string());
    let mut w = PcapWriter::with_header(Vec::new(), header).map_err(err)?;
    for (i, (_, f)) in frames.iter().enumerate() {
        let ts = Duration::from_millis(1_790_000_000_000 + i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .map_err(err)?;
    }
    Ok(w.into_writer())
}

/// The PROXY v2 target's input: two family bits, two 16-byte addresses
/// (IPv4 in the first 4), two ports.
fn proxy_pairs() -> Vec<(&'static str, [u8; 38])> {
    let seed = |v6c: bool, c: &[u8], v6l: bool, l: &[u8]| {
        let mut s = [0u8; 38];
        s[0] = v6c.into();
        s[1] = v6l.into();
        s[2..2 + c.len()].copy_from_slice(c);
        s[18..18 + l.len()].copy_from_slice(l);
        s[34..36].copy_from_slice(&40000u16.to_be_bytes());
        s[36..38].copy_from_slice(&80u16.to_be_bytes());
        s
    };
    let (c4, l4) = ([198, 18, 0, 2], [198, 18, 0, 1]);
    let c6 = synwall_bench::frame::addr::CLIENT6;
    let l6 = synwall_bench::frame::addr::SERVER6;
    let mut mapped = [0u8; 16];
    mapped[10..12].fill(0xff);
    mapped[12..].copy_from_slice(&c4);
    vec![
        ("v4", seed(false, &c4, false, &l4)),
        ("v6", seed(true, &c6, true, &l6)),
        ("mapped", seed(true, &mapped, false, &l4)),
        ("mixed", seed(false, &c4, true, &l6)),
    ]
}
