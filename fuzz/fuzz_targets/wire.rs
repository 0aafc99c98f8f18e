//! The wire parsers on arbitrary bytes: Ethernet and VLAN tags, IPv4 with
//! options, IPv6 with extension headers, the TCP header and its options.
//! None may panic, and what parses must emit and parse back the same.
//! The repair engine's segment locator runs on the same bytes: its ranges
//! must lie inside the frame, payload inside packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synwall::wire::{ethernet, ipv4, ipv6, tcp};

fuzz_target!(|data: &[u8]| {
    let l3 = match ethernet::L2::walk(data) {
        Ok(l2) => {
            let repr = ethernet::Repr::parse(data).expect("walk and parse agree");
            assert_eq!(repr.ethertype, l2.ethertype);
            let mut out = [0u8; 64];
            let n = repr.emit(&mut out).expect("room for any header");
            assert_eq!(n, l2.header_len);
            assert_eq!(ethernet::Repr::parse(&out[..n]).ok(), Some(repr));
            &data[l2.header_len..]
        }
        Err(_) => data,
    };
    ip(l3);
    segment(l3);
    if let Some(seg) = synwall::handoff::repair::Segment::parse(data) {
        assert!(seg.ip.start <= seg.payload.start && seg.payload.start <= seg.payload.end);
        assert!(seg.payload.end == seg.ip.end && seg.ip.end <= data.len());
    }
});

fn ip(l3: &[u8]) {
    if let Ok(p) = ipv4::Packet::new_checked(l3) {
        let _ = (
            p.verify_checksum(),
            p.options(),
            p.payload(),
            p.is_fragment(),
        );
        let repr = ipv4::Repr::parse(&p);
        let mut out = [0u8; 60];
        if let Ok(n) = repr.emit(&mut out) {
            // A header with its checksum in place sums to zero.
            assert_eq!(synwall::wire::checksum::checksum(&out[..n]), 0);
        }
    }
    // The walk stays inside the packet.
    if let Ok(p) = ipv6::Packet::new_checked(l3)
        && let Ok(upper) = p.upper_layer()
    {
        assert!(upper.offset <= p.total_len());
    }
}

fn segment(buf: &[u8]) {
    let Ok(t) = tcp::Packet::new_checked(buf) else {
        return;
    };
    let _ = (t.payload(), t.verify_checksum(0));
    let Ok(repr) = tcp::Repr::parse(&t) else {
        return;
    };
    let mut out = [0u8; 60];
    let n = repr.emit(&mut out).expect("room for any header");
    let again = tcp::Packet::new_checked(&out[..n]).expect("emitted header parses");
    let back = tcp::Repr::parse(&again).expect("emitted options parse");
    assert_eq!(back.options, repr.options);
    assert_eq!(
        (back.seq, back.ack, back.flags),
        (repr.seq, repr.ack, repr.flags)
    );
}
