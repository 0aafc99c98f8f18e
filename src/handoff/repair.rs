//! The repair hand-off engine (`[handoff] engine = "repair"`), for kernels
//! without `bpf_sk_assign_tcp_reqsk`: in proxy mode the XDP program sends
//! each verified ACK to its queue's worker, which builds the established
//! client socket itself with `TCP_REPAIR` (sequence numbers, MSS, both
//! window scales, SACK and timestamps from the cookie) and hands it to the
//! proxy's event loops.
//!
//! What the client sends goes through the kernel's receive path, so the
//! host's INPUT rules judge it as they would without synwall: the ACK's
//! data, and the segments right behind the ACK that reach XDP before the
//! socket exists (XDP sends them to the worker too), are put back in
//! through a raw IP socket once the socket is live (they reach TCP over
//! loopback as if they had just arrived), so the client never has to
//! retransmit them. Only the handshake itself bypasses INPUT: a client
//! whose address INPUT drops still gets a socket, which never receives a
//! byte and ends by the idle timeout; `[protect] deny` stops it in XDP.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::proto::cookie::Flow;
use crate::proto::handshake::Handoff;
use crate::wire::checksum::PROTO_TCP;
use crate::wire::{ethernet, ipv4, ipv6, tcp};
use crate::xdp::sockopt::{self, RepairOpt};

/// How long a rebuilt connection is remembered. A copy of its ACK, or a
/// segment behind it, that reaches a worker late (a worker that stalled
/// with it in its ring, the client's retransmission) still carries a valid
/// cookie: it is fed back into the kernel, which knows the connection (or
/// its TIME-WAIT), instead of being rebuilt into a second one that would
/// send the request to the upstream again. Far longer than a worker stall;
/// short enough for the table to stay small.
const REMEMBER: Duration = Duration::from_secs(10);
/// What a full shard keeps: the last second (the XDP program sends the
/// segments right behind an ACK here for that long, FLOW_TTL_NS).
const REMEMBER_WHEN_FULL: Duration = Duration::from_secs(1);
/// Shards of the table: workers rebuilding different connections seldom
/// wait for each other (a rebuild holds its shard's lock).
const SHARDS: usize = 64;
/// Connections remembered per shard at most (about 60 bytes each).
const SHARD_CAP: usize = 16 * 1024;

/// TCP option codes of `TCP_REPAIR_OPTIONS` (RFC 9293, RFC 7323, RFC 2018).
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// A client connection the worker rebuilt, on its way to the proxy.
#[derive(Debug)]
pub struct Repaired {
    /// The established, non-blocking socket.
    pub stream: TcpStream,
    /// The client.
    pub peer: SocketAddr,
}

/// Where repaired connections go: the proxy loops' channel, the eventfd
/// that wakes its epoll, and how many it has not taken yet, at most `cap`:
/// each holds a descriptor, so a proxy that falls behind must not let the
/// workers use up the process's (the sessions' upstream connections need
/// them too).
#[derive(Debug, Clone)]
pub struct ToProxy {
    tx: Sender<Repaired>,
    wake: Arc<OwnedFd>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl ToProxy {
    /// Room for one more connection, taken; false when `cap` wait already.
    fn reserve(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) < self.cap {
            return true;
        }
        self.release();
        false
    }

    /// Gives back a room [`ToProxy::reserve`] took, unused.
    fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sends a connection into a room reserved for it.
    fn send(&self, r: Repaired) -> bool {
        if self.tx.send(r).is_err() {
            self.release();
            return false;
        }
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        true
    }
}

/// The proxy's end of the engines' hand-off; each event loop holds a
/// clone, and whichever wakes first takes what has arrived.
#[derive(Debug, Clone)]
pub struct HandedIn {
    rx: Arc<Mutex<Receiver<Repaired>>>,
    wake: Arc<OwnedFd>,
    queued: Arc<AtomicUsize>,
}

impl HandedIn {
    /// The eventfd the engines write after each connection.
    pub fn wake(&self) -> &OwnedFd {
        &self.wake
    }

    /// How many connections wait to be taken.
    pub fn waiting(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The connections handed in so far, `most` at most; their rooms free
    /// again.
    pub fn take(&self, most: usize) -> Vec<Repaired> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut buf);
        let got: Vec<Repaired> = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_iter()
            .take(most)
            .collect();
        self.queued.fetch_sub(got.len(), Ordering::AcqRel);
        got
    }
}

/// The hand-off from `engines` engines to the proxy, with room for `cap`
/// connections the proxy has not taken yet (`[handoff] backlog`, as a
/// listener's accept queue holds).
pub fn hand_off(engines: usize, cap: usize) -> std::io::Result<(Vec<ToProxy>, HandedIn)> {
    use rustix::event::{EventfdFlags, eventfd};
    let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    let queued = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let ends = (0..engines)
        .map(|_| ToProxy {
            tx: tx.clone(),
            wake: Arc::clone(&wake),
            queued: Arc::clone(&queued),
            cap,
        })
        .collect();
    Ok((
        ends,
        HandedIn {
            rx: Arc::new(Mutex::new(rx)),
            wake,
            queued,
        },
    ))
}

/// The addresses, sequence numbers and window of one TCP segment in a
/// frame, and where its IP packet and payload lie.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Client as source.
    pub flow: Flow,
    /// Sequence number.
    pub seq: u32,
    /// Window (unscaled).
    pub window: u16,
    /// The IP packet's bytes in the frame.
    pub ip: std::ops::Range<usize>,
    /// The TCP segment's bytes (header and payload) in the frame.
    pub tcp: std::ops::Range<usize>,
    /// The payload's bytes in the frame.
    pub payload: std::ops::Range<usize>,
}

impl Segment {
    /// The TCP segment in an Ethernet frame (VLAN tags, IPv4 or IPv6 with
    /// extension headers), or `None` when there is none.
    pub fn parse(frame: &[u8]) -> Option<Segment> {
        let l2 = ethernet::L2::walk(frame).ok()?;
        let at = l2.header_len;
        match l2.ethertype {
            ethernet::ethertype::IPV4 => {
                let p = ipv4::Packet::new_checked(frame.get(at..)?).ok()?;
                if p.protocol() != PROTO_TCP || p.is_fragment() {
                    return None;
                }
                let (src, dst) = (p.src_addr(), p.dst_addr());
                let ip = at..at + usize::from(p.total_len());
                Segment::tcp(frame, ip, at + p.header_len(), |sport, dport| Flow::V4 {
                    src,
                    dst,
                    sport,
                    dport,
                })
            }
            ethernet::ethertype::IPV6 => {
                let p = ipv6::Packet::new_checked(frame.get(at..)?).ok()?;
                let up = p.upper_layer().ok()?;
                if up.protocol != PROTO_TCP || up.fragment != ipv6::Fragment::Whole {
                    return None;
                }
                let (src, dst) = (p.src_addr(), p.dst_addr());
                let ip = at..at + p.total_len();
                Segment::tcp(frame, ip, at + up.offset, |sport, dport| Flow::V6 {
                    src,
                    dst,
                    sport,
                    dport,
                })
            }
            _ => None,
        }
    }

    fn tcp(
        frame: &[u8],
        ip: std::ops::Range<usize>,
        l4: usize,
        flow: impl Fn(u16, u16) -> Flow,
    ) -> Option<Segment> {
        let t = tcp::Packet::new_checked(frame.get(l4..ip.end)?).ok()?;
        let start = l4 + t.header_len();
        Some(Segment {
            flow: flow(t.src_port(), t.dst_port()),
            seq: t.seq(),
            window: t.window(),
            payload: start..ip.end,
            tcp: l4..ip.end,
            ip,
        })
    }
}

/// What became of one frame the XDP program sent for the hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new connection, rebuilt and handed to the proxy.
    Repaired,
    /// Its socket could not be built (or the proxy has stopped).
    Failed,
    /// Not built: the proxy has not taken `[handoff] backlog` connections
    /// yet; the ACK is dropped, the client's next segment tries again.
    Busy,
    /// A segment of a connection rebuilt a moment ago, fed back in.
    Injected,
    /// Not a segment of any connection rebuilt here.
    Unknown,
}

/// The connections all workers rebuilt lately, and when, shared by them: a
/// client's ACK and its next segment may arrive on two queues, and the
/// second worker must neither build the connection again nor feed its
/// segment in before the first one's socket is live. One lock per shard
/// of connections, held through a rebuild.
#[derive(Debug)]
pub struct Recent {
    shards: Box<[Mutex<Shard>]>,
    hash: RandomState,
}

#[derive(Debug)]
struct Shard {
    /// Each connection rebuilt lately: our ISN (its cookie, the same in
    /// every segment that proves it) and when.
    flows: HashMap<Flow, (u32, Instant)>,
    pruned: Instant,
}

impl Recent {
    /// None yet, shared by the engines it is given to.
    pub fn shared() -> Arc<Recent> {
        let shard = || {
            Mutex::new(Shard {
                flows: HashMap::new(),
                pruned: Instant::now(),
            })
        };
        Arc::new(Recent {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            hash: RandomState::new(),
        })
    }

    fn index(&self, flow: &Flow) -> usize {
        self.hash.hash_one(flow) as usize % SHARDS
    }

    fn shard(&self, flow: &Flow) -> MutexGuard<'_, Shard> {
        self.shards[self.index(flow)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    /// Whether `server_isn`'s connection on `flow` was rebuilt lately (a
    /// new connection on the same ports has another cookie).
    fn rebuilt(&self, flow: &Flow, server_isn: u32) -> bool {
        self.flows
            .get(flow)
            .is_some_and(|&(isn, at)| isn == server_isn && at.elapsed() < REMEMBER)
    }

    fn remember(&mut self, flow: Flow, server_isn: u32, now: Instant) {
        if now.duration_since(self.pruned) >= REMEMBER_WHEN_FULL {
            self.pruned = now;
            self.flows
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        }
        if self.flows.len() >= SHARD_CAP {
            self.flows
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_WHEN_FULL);
        }
        self.flows.insert(flow, (server_isn, now));
    }
}

/// One worker's repair engine.
#[derive(Debug)]
pub struct Engine {
    to_proxy: ToProxy,
    /// Our window in the SYN-ACK (`synack.window`).
    our_window: u16,
    raw_v4: OwnedFd,
    raw_v6: OwnedFd,
    recent: Arc<Recent>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[error("the repair hand-off's raw socket: {0}")]
pub struct EngineError(#[from] std::io::Error);

fn raw_socket(family: AddressFamily) -> std::io::Result<OwnedFd> {
    // IPPROTO_RAW: sends IP packets whose header we supply (IP_HDRINCL,
    // and IPv6's equivalent, are implied).
    let fd = rustix::net::socket_with(
        family,
        SocketType::RAW,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(rustix::net::ipproto::RAW),
    )?;
    Ok(fd)
}

impl Engine {
    /// An engine handing connections to `to_proxy`; `our_window` is the
    /// SYN-ACK's window field.
    pub fn new(
        to_proxy: ToProxy,
        our_window: u16,
        recent: Arc<Recent>,
    ) -> Result<Engine, EngineError> {
        Ok(Engine {
            to_proxy,
            our_window,
            raw_v4: raw_socket(AddressFamily::INET)?,
            raw_v6: raw_socket(AddressFamily::INET6)?,
            recent,
        })
    }

    /// A frame whose cookie the core proved (`handoff`): a new connection
    /// is rebuilt; another segment of one rebuilt already is fed back in.
    pub fn established(&mut self, handoff: &Handoff, frame: &[u8]) -> Outcome {
        let Some(seg) = Segment::parse(frame) else {
            return Outcome::Failed;
        };
        // The shard stays locked through the rebuild: a segment of this
        // connection on another queue waits for the socket it joins.
        let mut shard = self.recent.shard(&handoff.flow);
        if shard.rebuilt(&handoff.flow, handoff.server_isn) {
            drop(shard);
            return self.inject(frame, &seg);
        }
        if !self.to_proxy.reserve() {
            // The proxy is behind: the ACK is dropped, as a listener with
            // a full accept queue drops it, and the client's next segment
            // (it carries the same cookie) tries again.
            return Outcome::Busy;
        }
        match rebuild(handoff, seg.window, self.our_window) {
            Ok(r) => {
                shard.remember(handoff.flow, handoff.server_isn, Instant::now());
                drop(shard);
                if !seg.payload.is_empty() {
                    // Lost, the client sends it again.
                    let _ = self.inject(frame, &seg);
                }
                if self.to_proxy.send(r) {
                    Outcome::Repaired
                } else {
                    Outcome::Failed
                }
            }
            Err(e) => {
                self.to_proxy.release();
                tracing::debug!("repair hand-off failed: {e}");
                Outcome::Failed
            }
        }
    }

    /// A frame the core did not take (its cookie no longer checks, as its
    /// sequence number has moved on): fed back in if it belongs to a
    /// connection rebuilt here.
    pub fn other(&mut self, frame: &[u8]) -> Outcome {
        let Some(seg) = Segment::parse(frame) else {
            return Outcome::Unknown;
        };
        let known = self.recent.shard(&seg.flow).flows.get(&seg.flow).copied();
        if known.is_some_and(|(_, at)| at.elapsed() < REMEMBER) {
            self.inject(frame, &seg)
        } else {
            Outcome::Unknown
        }
    }

    /// Sends the segment's IP packet to our own address: the kernel
    /// delivers it over loopback to the connection's socket.
    fn inject(&self, frame: &[u8], seg: &Segment) -> Outcome {
        let packet = complete_checksum(frame, seg);
        let (fd, to) = match seg.flow {
            Flow::V4 { dst, .. } => (&self.raw_v4, IpAddr::from(dst)),
            Flow::V6 { dst, .. } => (&self.raw_v6, IpAddr::from(dst)),
        };
        let to = SocketAddr::new(to, 0);
        match rustix::net::sendto(fd, &packet, rustix::net::SendFlags::empty(), &to) {
            Ok(_) => Outcome::Injected,
            Err(_) => Outcome::Failed,
        }
    }
}

/// The IP packet of `seg`, its TCP checksum completed if the sender left
/// it to offload (the pseudo-header's sum alone, as a local client behind
/// a veth sends it): a packet sent through a raw socket has its checksum
/// checked on the way back in, and the partial one would fail. Any other
/// checksum, right or wrong, is left as it came.
fn complete_checksum<'a>(frame: &'a [u8], seg: &Segment) -> std::borrow::Cow<'a, [u8]> {
    let packet = &frame[seg.ip.clone()];
    let tcp_at = seg.tcp.start - seg.ip.start;
    let seed = pseudo(&seg.flow, seg.tcp.len());
    let t = tcp::Packet::new_unchecked(&packet[tcp_at..]);
    if crate::wire::checksum::verify(seed, &packet[tcp_at..]) || !t.checksum_left_to_offload(seed) {
        return std::borrow::Cow::Borrowed(packet);
    }
    let mut whole = packet.to_vec();
    tcp::Packet::new_unchecked(&mut whole[tcp_at..]).fill_checksum(seed);
    std::borrow::Cow::Owned(whole)
}

/// The TCP pseudo-header sum of a segment of `len` bytes on `flow`.
fn pseudo(flow: &Flow, len: usize) -> u64 {
    use crate::wire::checksum::{pseudo_v4, pseudo_v6};
    match *flow {
        Flow::V4 { src, dst, .. } => pseudo_v4(src, dst, PROTO_TCP, len as u16),
        Flow::V6 { src, dst, .. } => pseudo_v6(src, dst, PROTO_TCP, len as u32),
    }
}

/// The two ends of a flow, ours first.
fn ends(flow: &Flow) -> (SocketAddr, SocketAddr) {
    let (client, server, sport, dport): (IpAddr, IpAddr, u16, u16) = match *flow {
        Flow::V4 {
            src,
            dst,
            sport,
            dport,
        } => (src.into(), dst.into(), sport, dport),
        Flow::V6 {
            src,
            dst,
            sport,
            dport,
        } => (src.into(), dst.into(), sport, dport),
    };
    (
        SocketAddr::new(server, dport),
        SocketAddr::new(client, sport),
    )
}

/// Builds the established socket of `h` with `TCP_REPAIR`: the client's
/// window `window` (as its ACK carried it), ours `our_window`.
pub fn rebuild(h: &Handoff, window: u16, our_window: u16) -> std::io::Result<Repaired> {
    use sockopt::*;
    let (local, peer) = ends(&h.flow);
    let family = if local.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let s = fd.as_fd();
    enter_repair(s, h)?;
    rustix::net::bind(&fd, &local)?;
    match rustix::net::connect(&fd, &peer) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(ts) = h.timestamps {
        // Again: connect may set the offset itself (seen on Linux 6.18,
        // about one connection in five when clients connect back to back).
        set_tcp(s, TCP_TIMESTAMP, &ts.tsecr)?;
    }
    set_tcp(s, TCP_REPAIR_OPTIONS, options(h).as_slice())?;
    set_windows(s, h, window, our_window)?;
    // Off: the kernel sends a window probe.
    set_tcp(s, TCP_REPAIR, &0i32)?;
    // Repair mode's forced reuse ends with it; without SO_REUSEADDR the
    // connection's TIME-WAIT would keep a restarted synwall's listener
    // from binding the port (accepted sockets inherit it from theirs).
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    Ok(Repaired {
        stream: TcpStream::from(fd),
        peer,
    })
}

/// Puts the new socket `s` in repair mode with both sequence numbers of
/// `h`, its MSS, and (with timestamps) our clock.
fn enter_repair(s: std::os::fd::BorrowedFd<'_>, h: &Handoff) -> std::io::Result<()> {
    use sockopt::*;
    // In repair mode bind ignores the proxy's listener on the same port,
    // and connect only enters ESTABLISHED: nothing goes on the wire.
    set_tcp(s, TCP_REPAIR, &1i32)?;
    // The client's MSS bounds ours; connect computes the socket's from it.
    set_tcp(s, TCP_MAXSEG, &i32::from(h.mss))?;
    set_tcp(s, TCP_REPAIR_QUEUE, &TCP_SEND_QUEUE)?;
    set_tcp(s, TCP_QUEUE_SEQ, &h.server_isn.wrapping_add(1))?;
    set_tcp(s, TCP_REPAIR_QUEUE, &TCP_RECV_QUEUE)?;
    set_tcp(s, TCP_QUEUE_SEQ, &h.client_isn.wrapping_add(1))?;
    if let Some(ts) = h.timestamps {
        // Our clock continues from the TSval of the SYN-ACK (the cookie's,
        // which the ACK echoes). Before connect: from connect on, the
        // socket is in the kernel's tables, and a segment XDP passes to it
        // gets an ACK stamped with this clock; a raw one would move the
        // client's PAWS clock past ours, and it would drop all we send.
        set_tcp(s, TCP_TIMESTAMP, &ts.tsecr)?;
    }
    Ok(())
}

/// Both windows: the client's `window` (scaled as it asked), ours
/// `our_window`.
fn set_windows(
    s: std::os::fd::BorrowedFd<'_>,
    h: &Handoff,
    window: u16,
    our_window: u16,
) -> std::io::Result<()> {
    use sockopt::*;
    let snd_wnd = u32::from(window) << h.snd_wscale.unwrap_or(0);
    set_tcp(
        s,
        TCP_REPAIR_WINDOW,
        &RepairWindow {
            snd_wl1: h.client_isn.wrapping_add(1),
            snd_wnd,
            max_window: snd_wnd,
            rcv_wnd: u32::from(our_window),
            rcv_wup: h.client_isn.wrapping_add(1),
        },
    )?;
    Ok(())
}

/// The negotiated options as `TCP_REPAIR_OPTIONS` takes them.
fn options(h: &Handoff) -> Vec<RepairOpt> {
    let mut v = vec![RepairOpt {
        code: TCPOPT_MSS,
        value: u32::from(h.mss),
    }];
    if let (Some(snd), Some(rcv)) = (h.snd_wscale, h.rcv_wscale) {
        v.push(RepairOpt {
            code: TCPOPT_WINDOW,
            value: u32::from(snd) | u32::from(rcv) << 16,
        });
    }
    if h.sack {
        v.push(RepairOpt {
            code: TCPOPT_SACK_PERM,
            value: 0,
        });
    }
    if h.timestamps.is_some() {
        v.push(RepairOpt {
            code: TCPOPT_TIMESTAMP,
            value: 0,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use synwall_bench::frame::{Ip, TcpFrame, addr};

    #[test]
    fn a_checksum_left_to_offload_is_completed_before_the_raw_socket() {
        use crate::wire::checksum;
        let ext = [(0u8, 8usize)];
        for whole in [
            frame(Ip::client_v4(), &[], b"GET / HTTP/1.0\r\n\r\n"),
            frame(Ip::client_v6(&ext), &[], b"GET / HTTP/1.0\r\n\r\n"),
        ] {
            let seg = Segment::parse(&whole).unwrap();
            let at = seg.tcp.start;
            let pseudo = pseudo(&seg.flow, seg.tcp.len());
            // The same frame as a local sender leaves it: partial checksum.
            let mut partial = whole.clone();
            partial[at + 16..at + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
            assert_eq!(
                &complete_checksum(&partial, &seg)[..],
                &whole[seg.ip.clone()],
                "completed"
            );
            assert!(matches!(
                complete_checksum(&whole, &seg),
                std::borrow::Cow::Borrowed(_)
            ));
            // A wrong checksum stays wrong: the kernel drops it as it would.
            let mut wrong = whole.clone();
            wrong[at + 16] ^= 0x40;
            assert_eq!(&complete_checksum(&wrong, &seg)[..], &wrong[seg.ip.clone()]);
        }
    }

    #[test]
    fn the_hand_off_holds_at_most_its_backlog_of_connections_not_taken() {
        let (ends, from) = hand_off(2, 2).unwrap();
        assert!(ends[0].reserve() && ends[1].reserve());
        assert!(!ends[0].reserve(), "a third waits for the proxy");
        ends[1].release();
        assert!(ends[0].reserve(), "a room given back is free");
        // A socket (never connected: no traffic) stands for a connection.
        let sock = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let peer: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        assert!(ends[0].send(Repaired {
            stream: TcpStream::from(sock),
            peer,
        }));
        assert!(!ends[1].reserve(), "sent, still not taken");
        assert_eq!(from.take(0).len(), 0, "no room in the proxy: it waits");
        assert_eq!(from.take(8).len(), 1);
        assert!(ends[1].reserve(), "taken: its room is free");
        drop(from);
        let sock = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        assert!(!ends[1].send(Repaired {
            stream: TcpStream::from(sock),
            peer,
        }));
        assert!(ends[0].reserve(), "a send that failed gave its room back");
    }

    fn frame(ip: Ip<'_>, vlans: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
        TcpFrame {
            vlans,
            seq: 7001,
            window: 501,
            payload,
            flags: crate::wire::tcp::flags::ACK,
            options: &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ..TcpFrame::client_syn(ip, &[])
        }
        .to_vec()
    }

    #[test]
    fn a_segment_is_found_behind_vlan_tags_and_ipv6_extension_headers() {
        let f = frame(Ip::client_v4(), &[(0x8100, 7)], b"GET /");
        let s = Segment::parse(&f).unwrap();
        assert_eq!((s.seq, s.window), (7001, 501));
        assert_eq!(&f[s.payload.clone()], b"GET /");
        assert_eq!(s.ip.end, f.len());
        let (ours, peer) = ends(&s.flow);
        assert_eq!(ours.ip(), IpAddr::from(addr::SERVER4));
        assert_eq!(peer.ip(), IpAddr::from(addr::CLIENT4));

        let ext = [(0u8, 8usize), (60, 16)];
        let f = frame(Ip::client_v6(&ext), &[], b"x");
        let s = Segment::parse(&f).unwrap();
        assert_eq!(&f[s.payload.clone()], b"x");
        assert!(matches!(s.flow, Flow::V6 { .. }));
    }

    #[test]
    fn no_segment_in_a_truncated_or_foreign_frame() {
        let f = frame(Ip::client_v4(), &[], b"data");
        for cut in [0, 13, 20, 40, f.len() - 1] {
            assert!(Segment::parse(&f[..cut]).is_none(), "cut at {cut}");
        }
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(Segment::parse(&arp).is_none());
    }

    #[test]
    fn a_connection_is_remembered_by_its_cookie_for_a_while() {
        let port = |sport| Flow::V4 {
            src: [198, 18, 0, 2],
            dst: [198, 18, 0, 1],
            sport,
            dport: 80,
        };
        let (flow, other) = (port(40000), port(40001));
        let t0 = Instant::now();
        let mut s = Shard {
            flows: HashMap::new(),
            pruned: t0,
        };
        s.remember(flow, 7, t0);
        assert!(s.rebuilt(&flow, 7), "a late copy of its ACK");
        assert!(!s.rebuilt(&flow, 8), "a new connection on the same ports");
        assert!(!s.rebuilt(&other, 7));
        s.remember(flow, 8, t0);
        assert!(s.rebuilt(&flow, 8) && !s.rebuilt(&flow, 7));

        // Past REMEMBER, pruned on the next insertion.
        let later = t0 + REMEMBER + Duration::from_millis(1);
        s.remember(other, 9, later);
        assert!(!s.flows.contains_key(&flow) && s.rebuilt(&other, 9));

        // A full shard keeps the last second.
        for i in 0..SHARD_CAP as u16 {
            s.remember(port(i), 1, later + Duration::from_secs(2));
        }
        s.remember(flow, 3, later + Duration::from_secs(4));
        assert_eq!(s.flows.len(), 1, "the older ones went");
        assert!(s.rebuilt(&flow, 3));
    }

    /// A worker rebuilding one connection (holding its shard) does not
    /// hold up another worker's rebuild of a connection in another shard.
    #[test]
    fn rebuilds_of_different_connections_do_not_wait_for_each_other() {
        let recent = Recent::shared();
        let port = |sport| Flow::V4 {
            src: [198, 18, 0, 2],
            dst: [198, 18, 0, 1],
            sport,
            dport: 80,
        };
        let a = port(1);
        let b = (2..)
            .map(port)
            .find(|f| recent.index(f) != recent.index(&a))
            .unwrap();
        let _rebuilding_a = recent.shard(&a);
        let (tx, rx) = std::sync::mpsc::channel();
        let other = Arc::clone(&recent);
        std::thread::spawn(move || {
            other.shard(&b).remember(b, 1, Instant::now());
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("b's rebuild went ahead while a's shard was held");
    }

    #[test]
    fn the_repair_options_carry_what_the_cookie_recorded() {
        let h = Handoff {
            flow: Segment::parse(&frame(Ip::client_v4(), &[], b""))
                .unwrap()
                .flow,
            client_isn: 1,
            server_isn: 2,
            mss: 1460,
            snd_wscale: Some(10),
            rcv_wscale: Some(7),
            sack: true,
            ecn: false,
            timestamps: None,
        };
        let got: Vec<(u32, u32)> = options(&h).iter().map(|o| (o.code, o.value)).collect();
        assert_eq!(got, [(2, 1460), (3, 10 | 7 << 16), (4, 0)]);
        let bare = Handoff {
            snd_wscale: None,
            rcv_wscale: None,
            sack: false,
            ..h
        };
        assert_eq!(options(&bare).len(), 1, "the MSS alone");
    }
}
