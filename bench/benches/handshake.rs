//! Criterion benches of the handshake core (no I/O).
//!
//! `handshake/syn_to_synack` copies a Linux-shaped IPv4 SYN into a 2 KiB
//! frame buffer (as an rx ring hands it over) and rewrites it in place into
//! the SYN-ACK; the copy (74 bytes) is part of the measured time.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use synwall::proto::cookie::{self, Flow, KeyRing, Secret, SynAttrs};
use synwall::proto::handshake::{Core, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options};

const NOW: UnixTime = UnixTime(1_790_000_000);

fn syn(ip: Ip<'_>) -> Vec<u8> {
    TcpFrame::client_syn(ip, &client_syn_options::LINUX).to_vec()
}

fn benches(c: &mut Criterion) {
    let secret = Secret::from_bytes(*b"synwall-bench-k!");
    let ring = KeyRing::new(&secret, NOW.epoch(60));
    let flow = Flow::V4 {
        src: [198, 18, 0, 2],
        dst: [198, 18, 0, 1],
        sport: 40000,
        dport: 80,
    };
    let attrs = SynAttrs {
        mss_index: 6,
        wscale: Some(7),
        sack: true,
        ecn: false,
        timestamps: true,
    };
    let ck = cookie::generate(ring.current(), &flow, 0x1111_2222, &attrs);

    c.bench_function("cookie/generate", |b| {
        b.iter(|| {
            cookie::generate(
                ring.current(),
                black_box(&flow),
                black_box(0x1111_2222),
                black_box(&attrs),
            )
        })
    });
    c.bench_function("cookie/check", |b| {
        b.iter(|| {
            cookie::check(
                &ring,
                black_box(&flow),
                black_box(0x1111_2222),
                black_box(ck.isn),
                black_box(ck.tsval),
            )
        })
    });

    let v4 = syn(Ip::V4 {
        src: [198, 18, 0, 2],
        dst: [198, 18, 0, 1],
        ttl: 64,
        options: &[],
    });
    let v6 = syn(Ip::V6 {
        src: [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        dst: [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        hop_limit: 64,
        ext: &[],
    });
    for (name, frame) in [
        ("handshake/syn_to_synack", v4),
        ("handshake/syn_to_synack_v6", v6),
    ] {
        let mut core = Core::new(Settings::default(), secret.clone());
        let mut buf = vec![0u8; 2048];
        assert!(matches!(
            core.handle(NOW, &mut buf[..], 0),
            Verdict::Drop(_)
        ));
        c.bench_function(name, |b| {
            b.iter(|| {
                buf[..frame.len()].copy_from_slice(&frame);
                let v = core.handle(NOW, black_box(&mut buf[..]), frame.len());
                debug_assert!(matches!(v, Verdict::Transmit(_)));
                v
            })
        });
    }
}

criterion_group!(handshake, benches);
criterion_main!(handshake);
