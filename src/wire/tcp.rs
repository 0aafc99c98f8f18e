//! TCP segments (RFC 9293) and their options (RFC 9293 §3.2, RFC 7323
//! window scale and timestamps, RFC 2018 SACK).

use super::checksum;
use super::{Error, Result, be16, be32, put16, put32};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Longest TCP header: data offset 15 × 4.
pub const MAX_HEADER_LEN: usize = 60;
/// Largest window-scale shift (RFC 7323 §2.3); larger values are clamped.
pub const MAX_WSCALE: u8 = 14;

/// Flag bits in byte 13 of the header (RFC 9293 §3.1, RFC 3168 §23.2).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size, length 4.
    pub const MSS: u8 = 2;
    /// Window scale, length 3.
    pub const WSCALE: u8 = 3;
    /// SACK permitted, length 2.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks, length 2 + 8n.
    pub const SACK: u8 = 5;
    /// Timestamps, length 10.
    pub const TIMESTAMPS: u8 = 8;
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer that holds the whole header: data offset ≥ 5 and the
    /// header (options included) within the buffer. The buffer must end where
    /// the segment ends, since the checksum covers all of it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = p.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.b(), 4)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.b(), 8)
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.b().get(12).map_or(0, |v| v >> 4)) * 4
    }

    /// The flag byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.b().get(13).copied().unwrap_or(0)
    }

    /// Window (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.b(), 14)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.b(), 18)
    }

    /// The raw options area.
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// The segment's data.
    pub fn payload(&self) -> &[u8] {
        self.b().get(self.header_len()..).unwrap_or_default()
    }

    /// True when the checksum over `seed` (a pseudo-header accumulator from
    /// [`checksum::pseudo_v4`] or [`checksum::pseudo_v6`]) and the whole
    /// segment is correct, or when the sender's stack left it to offload
    /// (Linux's CHECKSUM_PARTIAL: the field holds the pseudo-header's sum
    /// alone). A local sender's segments cross a veth or a tap in that
    /// form, and the kernel takes them, knowing where they came from; so
    /// does synwall. Nothing gets through that a correct checksum would
    /// not: anyone can compute one. `bpf/synack.h` (`tcp_csum_ok`) agrees.
    pub fn verify_checksum(&self, seed: u64) -> bool {
        checksum::verify(seed, self.b()) || self.checksum_left_to_offload(seed)
    }

    /// True when the checksum field holds the pseudo-header's sum over
    /// `seed` alone: the sender left the checksum to offload
    /// (CHECKSUM_PARTIAL).
    pub fn checksum_left_to_offload(&self, seed: u64) -> bool {
        be16(self.b(), 16) == checksum::fold(seed)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, seed: u64) {
        let b = self.buffer.as_mut();
        put16(b, 16, 0);
        let c = !checksum::fold(checksum::accumulate(seed, b));
        put16(b, 16, c);
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of the option list.
    EndOfList,
    /// Padding.
    NoOperation,
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift, as sent (not clamped).
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// SACK blocks: raw 8-byte left/right edge pairs.
    Sack(&'a [u8]),
    /// Timestamps.
    Timestamps {
        /// The sender's timestamp value.
        tsval: u32,
        /// The echoed timestamp.
        tsecr: u32,
    },
    /// A kind we do not interpret, skipped by its length.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data after kind and length.
        data: &'a [u8],
    },
}

/// Iterates over the options area; yields an error once and stops when an
/// option's length is impossible (shorter than 2, past the end, or wrong for
/// its kind).
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> OptionIter<'a> {
    /// Iterates over a raw options area.
    pub const fn new(options: &'a [u8]) -> Self {
        OptionIter { rest: options }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&k, after_kind) = self.rest.split_first()?;
        match k {
            kind::EOL => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            kind::NOP => {
                self.rest = after_kind;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let len = usize::from(after_kind.first().copied().unwrap_or(0));
        let Some(data) = self.rest.get(2..len.max(2)).filter(|_| len >= 2) else {
            self.rest = &[];
            return Some(Err(Error::BadOption));
        };
        self.rest = self.rest.get(len..).unwrap_or_default();
        let opt = match (k, data.len()) {
            (kind::MSS, 2) => TcpOption::Mss(be16(data, 0)),
            (kind::WSCALE, 1) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK, n) if n > 0 && n % 8 == 0 => TcpOption::Sack(data),
            (kind::TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: be32(data, 0),
                tsecr: be32(data, 4),
            },
            (
                kind::MSS | kind::WSCALE | kind::SACK_PERMITTED | kind::SACK | kind::TIMESTAMPS,
                _,
            ) => {
                self.rest = &[];
                return Some(Err(Error::BadOption));
            }
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        Some(Ok(opt))
    }
}

/// TCP timestamps option values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    /// Timestamp value.
    pub tsval: u32,
    /// Timestamp echo reply.
    pub tsecr: u32,
}

/// The options that matter to a handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift as sent.
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Timestamps.
    pub timestamps: Option<Timestamps>,
}

impl Options {
    /// Longest options area [`Options::emit`] writes.
    pub const MAX_EMIT_LEN: usize = 20;

    /// Parses an options area. Unknown kinds and SACK blocks are skipped;
    /// a repeated option keeps its last value; a malformed one is an error
    /// (the same rules as [`OptionIter`], in one tight loop for the hot path).
    #[inline]
    pub fn parse(raw: &[u8]) -> Result<Options> {
        match Self::linux_syn(raw) {
            Some(o) => Ok(o),
            None => Self::parse_any(raw),
        }
    }

    /// The options of a SYN from Linux with its defaults, read at fixed
    /// offsets: MSS, SACK-permitted, timestamps, NOP, window scale, 20 bytes
    /// (`tcp_options_write` in net/ipv4/tcp_output.c). Most SYNs have them;
    /// three compares replace the loop's branch per option.
    #[inline]
    fn linux_syn(raw: &[u8]) -> Option<Options> {
        let a: &[u8; 20] = raw.try_into().ok()?;
        let at = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let layout = at(0) & 0xffff_0000 == 0x0204_0000
            && at(4) == 0x0402_080a
            && at(16) & 0xffff_ff00 == 0x0103_0300;
        layout.then(|| Options {
            mss: Some((at(0) & 0xffff) as u16),
            wscale: Some(a[19]),
            sack_permitted: true,
            timestamps: Some(Timestamps {
                tsval: at(8),
                tsecr: at(12),
            }),
        })
    }

    /// [`Options::parse`] for any layout.
    fn parse_any(raw: &[u8]) -> Result<Options> {
        // Options are at most 40 bytes (data offset 15). Copied into a fixed
        // array, every read below is provably in bounds, so the loop runs
        // without per-byte checks; `n` still bounds every option.
        const ROOM: usize = 64;
        let n = raw.len();
        if n > MAX_HEADER_LEN - MIN_HEADER_LEN {
            return Err(Error::BadOption);
        }
        let mut a = [0u8; ROOM];
        a[..n].copy_from_slice(raw);
        let mut o = Options::default();
        let mut at = 0;
        while at < n {
            let k = a[at % ROOM];
            if k == kind::NOP {
                at += 1;
                continue;
            }
            if k == kind::EOL {
                break;
            }
            let len = usize::from(a[(at + 1) % ROOM]);
            if len < 2 || at + len > n {
                return Err(Error::BadOption);
            }
            let d = at + 2;
            let rd16 = |i: usize| u16::from_be_bytes([a[i % ROOM], a[(i + 1) % ROOM]]);
            match (k, len) {
                (kind::MSS, 4) => o.mss = Some(rd16(d)),
                (kind::WSCALE, 3) => o.wscale = Some(a[d % ROOM]),
                (kind::SACK_PERMITTED, 2) => o.sack_permitted = true,
                (kind::TIMESTAMPS, 10) => {
                    o.timestamps = Some(Timestamps {
                        tsval: u32::from(rd16(d)) << 16 | u32::from(rd16(d + 2)),
                        tsecr: u32::from(rd16(d + 4)) << 16 | u32::from(rd16(d + 6)),
                    });
                }
                (kind::SACK, l) if l > 2 && (l - 2) % 8 == 0 => {}
                (
                    kind::MSS | kind::WSCALE | kind::SACK_PERMITTED | kind::SACK | kind::TIMESTAMPS,
                    _,
                ) => {
                    return Err(Error::BadOption);
                }
                _ => {}
            }
            at += len;
        }
        Ok(o)
    }

    /// Bytes [`Options::emit`] writes (always a multiple of 4).
    pub fn emit_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() {
            n += 12;
        }
        if self.wscale.is_some() {
            n += 4;
        }
        if self.sack_permitted && self.timestamps.is_none() {
            n += 4;
        }
        n
    }

    /// The options as 32-bit words in the order Linux uses for a SYN-ACK
    /// (`tcp_options_write` in net/ipv4/tcp_output.c): MSS; SACK-permitted
    /// folded into the timestamps word when both are present, otherwise
    /// NOP NOP TS; NOP WS; NOP NOP SACK-permitted without timestamps.
    /// Returns the words and how many are used.
    fn words(&self) -> ([u32; Self::MAX_EMIT_LEN / 4], usize) {
        let mut w = [0u32; Self::MAX_EMIT_LEN / 4];
        let mut n = 0;
        let mut push = |v: u32| {
            w[n] = v;
            n += 1;
        };
        if let Some(mss) = self.mss {
            push(u32::from_be_bytes([kind::MSS, 4, 0, 0]) | u32::from(mss));
        }
        if let Some(ts) = self.timestamps {
            let lead = if self.sack_permitted {
                [kind::SACK_PERMITTED, 2]
            } else {
                [kind::NOP, kind::NOP]
            };
            push(u32::from_be_bytes([lead[0], lead[1], kind::TIMESTAMPS, 10]));
            push(ts.tsval);
            push(ts.tsecr);
        }
        if let Some(ws) = self.wscale {
            push(u32::from_be_bytes([kind::NOP, kind::WSCALE, 3, ws]));
        }
        if self.sack_permitted && self.timestamps.is_none() {
            push(u32::from_be_bytes([
                kind::NOP,
                kind::NOP,
                kind::SACK_PERMITTED,
                2,
            ]));
        }
        (w, n)
    }

    /// Writes the options (see `words` for the order); returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        self.emit_summed(buf).map(|(len, _)| len)
    }

    /// Writes the options and returns their length and checksum accumulator.
    fn emit_summed(&self, buf: &mut [u8]) -> Result<(usize, u64)> {
        let (w, n) = self.words();
        let out = buf.get_mut(..4 * n).ok_or(Error::Truncated)?;
        let mut sum = 0u64;
        for (i, &v) in w.iter().take(n).enumerate() {
            put32(out, 4 * i, v);
            sum += u64::from(v);
        }
        Ok((4 * n, sum))
    }
}

/// Parsed meaning of a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag byte.
    pub flags: u8,
    /// Window (unscaled).
    pub window: u16,
    /// Handshake options.
    pub options: Options,
}

impl Repr {
    /// Parses a checked segment; malformed options are an error.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            options: Options::parse(p.options())?,
        })
    }

    /// Header length [`Repr::emit`] writes.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.emit_len()
    }

    /// Writes the header with a zero checksum and urgent pointer; returns
    /// its length. Fill the checksum once the payload is in place.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        self.emit_summed(buf).map(|(len, _)| len)
    }

    /// Writes the header of a segment without payload, checksum included,
    /// computed from the values written rather than by reading them back.
    pub fn emit_with_checksum(&self, buf: &mut [u8], seed: u64) -> Result<usize> {
        let (len, sum) = self.emit_summed(buf)?;
        let c = !checksum::fold(sum + seed);
        put16(buf, 16, c);
        Ok(len)
    }

    fn emit_summed(&self, buf: &mut [u8]) -> Result<(usize, u64)> {
        let len = self.header_len();
        let h = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let ports = u32::from(self.src_port) << 16 | u32::from(self.dst_port);
        let w3 = u32::from(((len / 4) as u8) << 4) << 24
            | u32::from(self.flags) << 16
            | u32::from(self.window);
        put32(h, 0, ports);
        put32(h, 4, self.seq);
        put32(h, 8, self.ack);
        put32(h, 12, w3);
        put32(h, 16, 0);
        let (_, opt_sum) = self.options.emit_summed(&mut h[MIN_HEADER_LEN..])?;
        let sum =
            u64::from(ports) + u64::from(self.seq) + u64::from(self.ack) + u64::from(w3) + opt_sum;
        Ok((len, sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_option_kind() {
        let raw = [
            2, 4, 5, 0xb4, // MSS 1460
            1,    // NOP
            3, 3, 7, // WS 7
            4, 2, // SACK permitted
            5, 10, 0, 0, 0, 1, 0, 0, 0, 2, // SACK one block
            8, 10, 0, 0, 0, 9, 0, 0, 0, 0, // TS
            30, 4, 0xaa, 0xbb, // unknown kind 30 (MPTCP), skipped
            0, 0xff, 0xff, // EOL, then garbage that must be ignored
        ];
        let opts: Vec<_> = OptionIter::new(&raw).collect::<Result<_>>().unwrap();
        assert_eq!(opts[0], TcpOption::Mss(1460));
        assert_eq!(opts[1], TcpOption::NoOperation);
        assert_eq!(opts[2], TcpOption::WindowScale(7));
        assert_eq!(opts[3], TcpOption::SackPermitted);
        assert!(matches!(opts[4], TcpOption::Sack(b) if b.len() == 8));
        assert_eq!(opts[5], TcpOption::Timestamps { tsval: 9, tsecr: 0 });
        assert_eq!(
            opts[6],
            TcpOption::Unknown {
                kind: 30,
                data: &[0xaa, 0xbb]
            }
        );
        assert_eq!(opts[7], TcpOption::EndOfList);
        assert_eq!(opts.len(), 8);
        let o = Options::parse(&raw).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamps, Some(Timestamps { tsval: 9, tsecr: 0 }));
    }

    #[test]
    fn rejects_malformed_lengths() {
        for raw in [
            &[2, 4, 5][..],            // MSS cut short
            &[2, 3, 5],                // MSS with length 3
            &[3, 4, 7, 0],             // WS with length 4
            &[4, 3, 0],                // SACK-permitted with length 3
            &[8, 8, 0, 0, 0, 0, 0, 0], // TS with length 8
            &[5, 6, 0, 0, 0, 0],       // SACK not a multiple of 8
            &[30, 1],                  // length below 2
            &[30, 0],                  // length 0 (would loop forever)
            &[30],                     // kind without length
        ] {
            assert_eq!(Options::parse(raw), Err(Error::BadOption), "{raw:?}");
        }
    }

    #[test]
    fn linux_synack_order() {
        let o = Options {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: Some(Timestamps { tsval: 1, tsecr: 2 }),
        };
        let mut buf = [0u8; 20];
        assert_eq!(o.emit(&mut buf).unwrap(), 20);
        assert_eq!(
            buf,
            [
                2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7
            ]
        );
    }

    #[test]
    fn header_checks() {
        let mut seg = [0u8; 24];
        seg[12] = 4 << 4;
        assert_eq!(Packet::new_checked(&seg[..]).err(), Some(Error::Malformed));
        seg[12] = 7 << 4;
        assert_eq!(Packet::new_checked(&seg[..]).err(), Some(Error::Truncated));
        seg[12] = 6 << 4;
        assert_eq!(Packet::new_checked(&seg[..]).unwrap().options().len(), 4);
    }

    fn options() -> impl Strategy<Value = Options> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=14),
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
        )
            .prop_map(|(mss, wscale, sack_permitted, ts)| Options {
                mss,
                wscale,
                sack_permitted,
                timestamps: ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
            })
    }

    #[test]
    fn a_checksum_left_to_offload_is_taken_and_a_wrong_one_is_not() {
        let repr = Repr {
            src_port: 40000,
            dst_port: 80,
            seq: 7,
            ack: 0,
            flags: 0x02,
            window: 64240,
            options: Options::default(),
        };
        let mut buf = vec![0u8; repr.header_len()];
        repr.emit(&mut buf).unwrap();
        let seed = checksum::pseudo_v4([198, 18, 0, 2], [198, 18, 0, 1], 6, buf.len() as u16);
        // CHECKSUM_PARTIAL, as Linux writes it: ~csum_tcpudp_magic(.., 0).
        put16(&mut buf, 16, checksum::fold(seed));
        assert!(Packet::new_checked(&buf[..]).unwrap().verify_checksum(seed));
        let right = {
            let mut b = buf.clone();
            Packet::new_unchecked(&mut b[..]).fill_checksum(seed);
            be16(&b, 16)
        };
        for wrong in [checksum::fold(seed) ^ 1, !checksum::fold(seed), 0] {
            if wrong == right {
                continue;
            }
            put16(&mut buf, 16, wrong);
            assert!(
                !Packet::new_checked(&buf[..]).unwrap().verify_checksum(seed),
                "{wrong:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn emit_parse_identity(
            src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(),
            ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
            options in options(), payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let repr = Repr { src_port, dst_port, seq, ack, flags, window, options };
            let mut buf = vec![0u8; repr.header_len() + payload.len()];
            let hl = repr.emit(&mut buf).unwrap();
            buf[hl..].copy_from_slice(&payload);
            let seed = checksum::pseudo_v4([198, 18, 0, 2], [198, 18, 0, 1], 6, buf.len() as u16);
            Packet::new_unchecked(&mut buf[..]).fill_checksum(seed);
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum(seed));
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn computed_checksum_matches_read_back(
            src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(),
            ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(), options in options(),
            seed in any::<u32>(),
        ) {
            let repr = Repr { src_port, dst_port, seq, ack, flags, window, options };
            let mut buf = vec![0u8; repr.header_len()];
            repr.emit_with_checksum(&mut buf, u64::from(seed)).unwrap();
            prop_assert!(Packet::new_checked(&buf[..]).unwrap().verify_checksum(u64::from(seed)));
        }

        #[test]
        fn linux_syn_layout_parses_as_any_layout(
            mss in any::<u16>(), ws in any::<u8>(), tsval in any::<u32>(), tsecr in any::<u32>(),
            flip in 0usize..20, to in any::<u8>(),
        ) {
            let mut raw = vec![2, 4];
            raw.extend(mss.to_be_bytes());
            raw.extend([4, 2, 8, 10]);
            raw.extend(tsval.to_be_bytes());
            raw.extend(tsecr.to_be_bytes());
            raw.extend([1, 3, 3, ws]);
            let o = Options::linux_syn(&raw).expect("the layout of a Linux SYN");
            prop_assert_eq!(Ok(o), Options::parse_any(&raw));
            // One byte changed: the fast path takes it only if it is still
            // that layout, and parse agrees with the general loop.
            raw[flip] = to;
            prop_assert_eq!(Options::parse(&raw), Options::parse_any(&raw));
            prop_assert_eq!(Options::parse(&raw[..19]), Options::parse_any(&raw[..19]));
        }

        #[test]
        fn option_parse_agrees_with_the_iterator(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            // The fast parser and the iterator must accept and reject alike.
            let via_iter: Result<Vec<_>> = OptionIter::new(&raw).collect();
            let fast = Options::parse(&raw);
            prop_assert_eq!(via_iter.is_ok(), fast.is_ok(), "{:?}", raw);
            if let (Ok(opts), Ok(o)) = (via_iter, fast) {
                let mss = opts.iter().rev().find_map(|x| match x { TcpOption::Mss(m) => Some(*m), _ => None });
                let ts = opts.iter().rev().find_map(|x| match x {
                    TcpOption::Timestamps { tsval, tsecr } => Some(Timestamps { tsval: *tsval, tsecr: *tsecr }),
                    _ => None,
                });
                prop_assert_eq!(o.mss, mss);
                prop_assert_eq!(o.timestamps, ts);
            }
        }
    }
}
