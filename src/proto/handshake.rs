//! The handshake core: one frame in, one decision out, the SYN-ACK written
//! in place. No I/O, no clock, no logging, no allocation.
//!
//! ```text
//! frame ──► L2 (VLAN tags) ──► IPv4/IPv6 ──► protected port? ──► checksums
//!             │ not IP: Pass     │ not TCP, fragment: Pass  │ no: Pass
//!             ▼                                              ▼
//!   SYN ──► cookie ──► SYN-ACK in place: Transmit(len)
//!   ACK ──► cookie check ──► Established(attrs) | Drop(BadCookie)
//!   RST ──► Pass (the kernel ignores it without a socket)
//! ```

use super::cookie::{self, Flow, KeyRing, KeySchedule, MssTable, Secrets, SynAttrs};
use super::time::UnixTime;
use crate::wire::checksum::{self, PROTO_TCP};
use crate::wire::ipv6::Fragment;
use crate::wire::tcp::{self, Timestamps, flags};
use crate::wire::{Error as WireError, ethernet, ipv4, ipv6};

/// RFC 9293 §3.7.1: MSS assumed when an IPv4 SYN carries no MSS option.
pub const DEFAULT_MSS_V4: u16 = 536;
/// RFC 8200 §8.3: MSS assumed for IPv6 without the option (1280 - 60).
pub const DEFAULT_MSS_V6: u16 = 1220;

/// Why a frame was dropped. Every drop has one, and each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The frame ends inside a header.
    Truncated,
    /// IPv4 header with a bad version, IHL or total length.
    Ipv4Header,
    /// IPv4 header checksum wrong.
    Ipv4Checksum,
    /// IPv6 header with a bad payload length.
    Ipv6Header,
    /// IPv6 extension headers malformed or too many.
    Ipv6ExtHeaders,
    /// TCP data offset impossible.
    TcpHeader,
    /// A TCP option with an impossible length.
    TcpOptions,
    /// TCP checksum wrong.
    TcpChecksum,
    /// SYN with FIN.
    SynFin,
    /// SYN with RST.
    SynRst,
    /// SYN with ACK (a SYN-ACK to a server port).
    SynAck,
    /// Neither SYN, ACK nor RST (NULL, FIN-only, and similar scans).
    BadFlags,
    /// Source that no SYN may come from (multicast, broadcast, loopback,
    /// unspecified, port 0, or source equal to destination).
    BadSource,
    /// An ACK whose cookie does not validate.
    BadCookie,
    /// The buffer is too small for the reply.
    NoRoom,
    /// A first fragment without the whole TCP header (RFC 1858), or a SYN
    /// in fragments, which no TCP stack sends.
    Fragment,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 16] = [
        DropReason::Truncated,
        DropReason::Ipv4Header,
        DropReason::Ipv4Checksum,
        DropReason::Ipv6Header,
        DropReason::Ipv6ExtHeaders,
        DropReason::TcpHeader,
        DropReason::TcpOptions,
        DropReason::TcpChecksum,
        DropReason::SynFin,
        DropReason::SynRst,
        DropReason::SynAck,
        DropReason::BadFlags,
        DropReason::BadSource,
        DropReason::BadCookie,
        DropReason::NoRoom,
        DropReason::Fragment,
    ];

    /// Stable snake_case name, used in counters and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Ipv4Header => "ipv4_header",
            DropReason::Ipv4Checksum => "ipv4_checksum",
            DropReason::Ipv6Header => "ipv6_header",
            DropReason::Ipv6ExtHeaders => "ipv6_ext_headers",
            DropReason::TcpHeader => "tcp_header",
            DropReason::TcpOptions => "tcp_options",
            DropReason::TcpChecksum => "tcp_checksum",
            DropReason::SynFin => "syn_fin",
            DropReason::SynRst => "syn_rst",
            DropReason::SynAck => "syn_ack",
            DropReason::BadFlags => "bad_flags",
            DropReason::BadSource => "bad_source",
            DropReason::BadCookie => "bad_cookie",
            DropReason::NoRoom => "no_room",
            DropReason::Fragment => "fragment",
        }
    }

    /// Index of this reason in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the attributes of a validated cookie say about the connection: what
/// a hand-off needs to build the socket the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// The connection, client as source.
    pub flow: Flow,
    /// The client's ISN (the ACK's sequence number minus one).
    pub client_isn: u32,
    /// Our ISN, the cookie (the ACK's acknowledgment number minus one).
    pub server_isn: u32,
    /// The client's MSS, as the table entry the cookie carries.
    pub mss: u16,
    /// The client's window-scale shift (`None`: window scaling is off).
    pub snd_wscale: Option<u8>,
    /// Our window-scale shift as advertised in the SYN-ACK.
    pub rcv_wscale: Option<u8>,
    /// SACK permitted.
    pub sack: bool,
    /// ECN negotiated.
    pub ecn: bool,
    /// The ACK's timestamps, when timestamps are negotiated.
    pub timestamps: Option<Timestamps>,
}

/// The decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: let the kernel have it.
    Pass,
    /// The buffer now holds a reply of this many bytes; send it back out.
    Transmit(usize),
    /// Drop, for this reason.
    Drop(DropReason),
    /// A valid cookie: hand the connection off with these attributes.
    Established(Handoff),
}

/// Set of protected TCP ports: a 65 536-bit map, one lookup per frame.
#[derive(Clone)]
pub struct PortSet(Box<[u64; 1024]>);

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PortSet {
    /// A set of the given ports.
    pub fn new(ports: &[u16]) -> Self {
        let mut s = PortSet(Box::new([0; 1024]));
        for &p in ports {
            s.0[usize::from(p >> 6)] |= 1 << (p & 63);
        }
        s
    }

    /// Whether `port` is protected.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    /// The ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| self.contains(p))
    }
}

/// How SYN-ACKs look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynAckSettings {
    /// Receive window in the SYN-ACK (never scaled, RFC 7323 §2.2).
    pub window: u16,
    /// IPv4 TTL and IPv6 hop limit.
    pub ttl: u8,
    /// Our MSS over IPv4.
    pub mss_v4: u16,
    /// Our MSS over IPv6.
    pub mss_v6: u16,
    /// Our window-scale shift, sent only when the client offered one.
    pub wscale: u8,
    /// Answer ECN-setup SYNs with ECE (RFC 3168 §6.1.1).
    pub ecn: bool,
}

impl Default for SynAckSettings {
    fn default() -> Self {
        // Linux defaults: a 64240-byte initial window (44 × 1460), TTL 64,
        // window scale 7 for the default 6 MiB tcp_rmem maximum.
        SynAckSettings {
            window: 64240,
            ttl: 64,
            mss_v4: 1460,
            mss_v6: 1440,
            wscale: 7,
            ecn: true,
        }
    }
}

/// Everything the core needs to decide.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Protected destination ports.
    pub ports: PortSet,
    /// Protected destination addresses; empty protects every address.
    pub addresses_v4: Vec<ipv4::Addr>,
    /// Protected IPv6 destination addresses (see `addresses_v4`).
    pub addresses_v6: Vec<ipv6::Addr>,
    /// MSS values cookies can express.
    pub mss_table: MssTable,
    /// Seconds per cookie epoch.
    pub rotation_secs: u64,
    /// Seconds before an epoch at which its key is accepted: the clock
    /// difference between nodes that cookies tolerate (docs/cookie.md §2).
    pub skew_secs: u64,
    /// SYN-ACK shape.
    pub synack: SynAckSettings,
    /// Verify IPv4 and TCP checksums of incoming frames.
    pub verify_checksums: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ports: PortSet::new(&[80]),
            addresses_v4: Vec::new(),
            addresses_v6: Vec::new(),
            mss_table: MssTable::default(),
            rotation_secs: 60,
            skew_secs: cookie::DEFAULT_SKEW_SECS,
            synack: SynAckSettings::default(),
            verify_checksums: true,
        }
    }
}

impl Settings {
    /// When each epoch's key is accepted.
    pub const fn schedule(&self) -> KeySchedule {
        KeySchedule::new(self.rotation_secs, self.skew_secs)
    }

    /// Whether a segment to `dport` at the destination of `net` is ours.
    fn protects(&self, dport: u16, net: &Net) -> bool {
        if !self.ports.contains(dport) {
            return false;
        }
        if self.addresses_v4.is_empty() && self.addresses_v6.is_empty() {
            return true;
        }
        match net {
            Net::V4 { dst, .. } => self.addresses_v4.contains(dst),
            Net::V6 { dst, .. } => self.addresses_v6.contains(dst),
        }
    }
}

/// The handshake core. One per worker; owns its keys.
#[derive(Debug, Clone)]
pub struct Core {
    settings: Settings,
    secrets: Secrets,
    keys: KeyRing,
    /// `[start, end)` in UNIX seconds of the keys' state, so the hot path
    /// compares instead of dividing.
    epoch_secs: (u64, u64),
}

/// The IP layer of a segment being answered, as needed to build the reply.
#[derive(Clone, Copy)]
enum Net {
    V4 { src: ipv4::Addr, dst: ipv4::Addr },
    V6 { src: ipv6::Addr, dst: ipv6::Addr },
}

impl Net {
    /// The connection with these ports, client as source.
    fn flow(self, sport: u16, dport: u16) -> Flow {
        match self {
            Net::V4 { src, dst } => Flow::V4 {
                src,
                dst,
                sport,
                dport,
            },
            Net::V6 { src, dst } => Flow::V6 {
                src,
                dst,
                sport,
                dport,
            },
        }
    }

    /// The TCP pseudo-header sum for a segment of `len` bytes. The sum is
    /// symmetric in the addresses, so it serves the reply as well.
    fn pseudo(self, len: usize) -> u64 {
        match self {
            Net::V4 { src, dst } => checksum::pseudo_v4(src, dst, PROTO_TCP, len as u16),
            Net::V6 { src, dst } => checksum::pseudo_v6(src, dst, PROTO_TCP, len as u32),
        }
    }

    /// A source no SYN may come from, or a destination no SYN may go to.
    fn bad_endpoints(self) -> bool {
        match self {
            Net::V4 { src, dst } => ipv4::is_bad_source(src) || src == dst || dst[0] >= 224,
            Net::V6 { src, dst } => ipv6::is_bad_source(src) || src == dst || dst[0] == 0xff,
        }
    }
}

impl Core {
    /// A core with these settings and secret (or secrets, during a
    /// rollover).
    pub fn new(settings: Settings, secrets: impl Into<Secrets>) -> Self {
        let secrets = secrets.into();
        let epochs = settings.schedule().at(UnixTime(0));
        Core {
            keys: KeyRing::of(&secrets, &epochs),
            epoch_secs: (epochs.from, epochs.until),
            settings,
            secrets,
        }
    }

    /// The settings.
    pub const fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The keys for `now`, re-derived when the epoch changed.
    #[inline]
    pub fn keys(&mut self, now: UnixTime) -> &KeyRing {
        let (start, end) = self.epoch_secs;
        if now.0 < start || now.0 >= end {
            let epochs = self.settings.schedule().at(now);
            self.keys = KeyRing::of(&self.secrets, &epochs);
            self.epoch_secs = (epochs.from, epochs.until);
        }
        &self.keys
    }

    /// Decides what to do with the frame in `buf[..len]`. For a SYN to a
    /// protected port the SYN-ACK is written over it (using up to
    /// `buf.len()` bytes) and `Transmit(reply_len)` is returned.
    pub fn handle(&mut self, now: UnixTime, buf: &mut [u8], len: usize) -> Verdict {
        let len = len.min(buf.len());
        let eth = match ethernet::L2::walk(&buf[..len]) {
            Ok(e) => e,
            // A third VLAN tag: not a frame we can judge.
            Err(WireError::TooDeep) => return Verdict::Pass,
            Err(_) => return Verdict::Drop(DropReason::Truncated),
        };
        match eth.ethertype {
            ethernet::ethertype::IPV4 => self.handle_v4(now, buf, len, eth),
            ethernet::ethertype::IPV6 => self.handle_v6(now, buf, len, eth),
            _ => Verdict::Pass,
        }
    }

    fn handle_v4(
        &mut self,
        now: UnixTime,
        buf: &mut [u8],
        len: usize,
        eth: ethernet::L2,
    ) -> Verdict {
        let l3 = eth.header_len;
        let ip = match ipv4::Packet::new_checked(&buf[l3..len]) {
            Ok(p) => p,
            Err(e) => return header_drop(e, DropReason::Ipv4Header),
        };
        // A later fragment has no TCP header: the first one decides.
        if ip.protocol() != PROTO_TCP || ip.frag_offset() != 0 {
            return Verdict::Pass;
        }
        let net = Net::V4 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
        };
        let seg = ip.payload();
        if ip.more_frags() {
            return self.first_fragment(seg, &net);
        }
        if seg.len() < 4 {
            return Verdict::Drop(DropReason::Truncated);
        }
        if !self.settings.protects(crate::wire::be16(seg, 2), &net) {
            return Verdict::Pass;
        }
        if self.settings.verify_checksums && !ip.verify_checksum() {
            return Verdict::Drop(DropReason::Ipv4Checksum);
        }
        self.handle_tcp(now, buf, eth, seg_range(l3, &ip), net)
    }

    fn handle_v6(
        &mut self,
        now: UnixTime,
        buf: &mut [u8],
        len: usize,
        eth: ethernet::L2,
    ) -> Verdict {
        let l3 = eth.header_len;
        let ip = match ipv6::Packet::new_checked(&buf[l3..len]) {
            Ok(p) => p,
            Err(e) => return header_drop(e, DropReason::Ipv6Header),
        };
        let up = match ip.upper_layer() {
            Ok(u) => u,
            Err(_) => return Verdict::Drop(DropReason::Ipv6ExtHeaders),
        };
        if up.protocol != PROTO_TCP || up.fragment == Fragment::Later {
            return Verdict::Pass;
        }
        let net = Net::V6 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
        };
        let (start, end) = (l3 + up.offset, l3 + ip.total_len());
        if up.fragment == Fragment::First {
            return self.first_fragment(buf.get(start..end).unwrap_or_default(), &net);
        }
        let Some(seg) = buf.get(start..end).filter(|s| s.len() >= 4) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if !self.settings.protects(crate::wire::be16(seg, 2), &net) {
            return Verdict::Pass;
        }
        self.handle_tcp(now, buf, eth, (start, end), net)
    }

    /// The first fragment of a TCP segment (`seg`: its bytes of it): one
    /// without the whole TCP header could have its flags filled in by the
    /// next fragment (RFC 1858), and a SYN never needs fragmenting; the rest
    /// is the kernel's to reassemble.
    fn first_fragment(&self, seg: &[u8], net: &Net) -> Verdict {
        if seg.len() < tcp::MIN_HEADER_LEN {
            return Verdict::Drop(DropReason::Fragment);
        }
        if !self.settings.protects(crate::wire::be16(seg, 2), net) {
            return Verdict::Pass;
        }
        let f = seg[13];
        if f & flags::SYN != 0 && f & (flags::ACK | flags::RST) == 0 {
            return Verdict::Drop(DropReason::Fragment);
        }
        Verdict::Pass
    }

    #[inline]
    fn handle_tcp(
        &mut self,
        now: UnixTime,
        buf: &mut [u8],
        eth: ethernet::L2,
        (start, end): (usize, usize),
        net: Net,
    ) -> Verdict {
        let seg = &buf[start..end];
        let seed = net.pseudo(seg.len());
        let t = match tcp::Packet::new_checked(seg) {
            Ok(t) => t,
            Err(e) => return header_drop(e, DropReason::TcpHeader),
        };
        if self.settings.verify_checksums && !t.verify_checksum(seed) {
            return Verdict::Drop(DropReason::TcpChecksum);
        }
        let Ok(syn) = tcp::Repr::parse(&t) else {
            return Verdict::Drop(DropReason::TcpOptions);
        };
        let f = syn.flags;
        let flow = net.flow(syn.src_port, syn.dst_port);
        if f & flags::SYN == 0 {
            return if f & flags::RST != 0 {
                Verdict::Pass
            } else if f & flags::ACK != 0 {
                self.check_ack(now, flow, &syn)
            } else {
                Verdict::Drop(DropReason::BadFlags)
            };
        }
        if f & flags::RST != 0 {
            return Verdict::Drop(DropReason::SynRst);
        }
        if f & flags::FIN != 0 {
            return Verdict::Drop(DropReason::SynFin);
        }
        if f & flags::ACK != 0 {
            return Verdict::Drop(DropReason::SynAck);
        }
        if net.bad_endpoints() || syn.src_port == 0 || eth.src_is_group {
            return Verdict::Drop(DropReason::BadSource);
        }
        self.answer_syn(now, buf, eth, flow, &syn, net)
    }

    fn check_ack(&mut self, now: UnixTime, flow: Flow, ack: &tcp::Repr) -> Verdict {
        let client_isn = ack.seq.wrapping_sub(1);
        let server_isn = ack.ack.wrapping_sub(1);
        let tsecr = ack.options.timestamps.map(|t| t.tsecr);
        let wscale = self.settings.synack.wscale;
        let table = self.settings.mss_table;
        match cookie::check(self.keys(now), &flow, client_isn, server_isn, tsecr) {
            Ok(a) => Verdict::Established(Handoff {
                flow,
                client_isn,
                server_isn,
                mss: table.get(a.mss_index),
                snd_wscale: a.wscale,
                rcv_wscale: a.wscale.map(|_| wscale),
                sack: a.sack,
                ecn: a.ecn,
                timestamps: ack.options.timestamps,
            }),
            Err(_) => Verdict::Drop(DropReason::BadCookie),
        }
    }

    fn answer_syn(
        &mut self,
        now: UnixTime,
        buf: &mut [u8],
        eth: ethernet::L2,
        flow: Flow,
        syn: &tcp::Repr,
        net: Net,
    ) -> Verdict {
        let ip_len = match net {
            Net::V4 { .. } => ipv4::MIN_HEADER_LEN,
            Net::V6 { .. } => ipv6::HEADER_LEN,
        };
        let reply = self.synack(now, &flow, syn, net);
        let l3 = eth.header_len;
        let tcp_len = reply.header_len();
        let total = l3 + ip_len + tcp_len;
        if total > buf.len() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        ethernet::Frame::new_unchecked(&mut buf[..l3]).swap_addrs();
        let ttl = self.settings.synack.ttl;
        if emit_reply_ip(&mut buf[l3..], net, tcp_len, ttl).is_err() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let seed = net.pseudo(tcp_len);
        if reply
            .emit_with_checksum(&mut buf[l3 + ip_len..total], seed)
            .is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        Verdict::Transmit(total)
    }

    /// The SYN-ACK's TCP header for `syn`, its sequence number the cookie
    /// of `now`'s epoch.
    #[inline(always)]
    fn synack(&mut self, now: UnixTime, flow: &Flow, syn: &tcp::Repr, net: Net) -> tcp::Repr {
        let s = self.settings.synack;
        let (default_mss, our_mss) = match net {
            Net::V4 { .. } => (DEFAULT_MSS_V4, s.mss_v4),
            Net::V6 { .. } => (DEFAULT_MSS_V6, s.mss_v6),
        };
        let o = syn.options;
        let ecn = s.ecn && syn.flags & (flags::ECE | flags::CWR) == flags::ECE | flags::CWR;
        let attrs = SynAttrs {
            mss_index: self
                .settings
                .mss_table
                .index_for(o.mss.unwrap_or(default_mss)),
            wscale: o.wscale.map(|w| w.min(tcp::MAX_WSCALE)),
            sack: o.sack_permitted,
            ecn,
            timestamps: o.timestamps.is_some(),
        };
        let c = cookie::generate(self.keys(now).current(), flow, syn.seq, &attrs);
        tcp::Repr {
            src_port: syn.dst_port,
            dst_port: syn.src_port,
            seq: c.isn,
            ack: syn.seq.wrapping_add(1),
            flags: flags::SYN | flags::ACK | if ecn { flags::ECE } else { 0 },
            window: s.window,
            options: tcp::Options {
                mss: Some(our_mss),
                wscale: attrs.wscale.map(|_| s.wscale),
                sack_permitted: attrs.sack,
                timestamps: c.tsval.zip(o.timestamps).map(|(tsval, ts)| Timestamps {
                    tsval,
                    tsecr: ts.tsval,
                }),
            },
        }
    }
}

/// The SYN-ACK's IP header into `buf`, addresses swapped: never
/// ECN-capable (RFC 3168 §6.1.1), and for IPv4 atomic, its ID unused
/// (RFC 6864 §4.1).
#[inline(always)]
fn emit_reply_ip(buf: &mut [u8], net: Net, tcp_len: usize, ttl: u8) -> Result<usize, WireError> {
    match net {
        Net::V4 { src, dst } => ipv4::Repr {
            src: dst,
            dst: src,
            protocol: PROTO_TCP,
            payload_len: tcp_len as u16,
            ttl,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
        .emit(buf),
        Net::V6 { src, dst } => ipv6::Repr {
            src: dst,
            dst: src,
            next_header: PROTO_TCP,
            payload_len: tcp_len as u16,
            hop_limit: ttl,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(buf),
    }
}

/// A header that did not parse: cut short, or malformed in its own way.
fn header_drop(e: WireError, malformed: DropReason) -> Verdict {
    Verdict::Drop(match e {
        WireError::Truncated => DropReason::Truncated,
        _ => malformed,
    })
}

fn seg_range<T: AsRef<[u8]>>(l3: usize, ip: &ipv4::Packet<T>) -> (usize, usize) {
    (l3 + ip.header_len(), l3 + usize::from(ip.total_len()))
}
