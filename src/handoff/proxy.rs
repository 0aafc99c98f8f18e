//! Proxy mode: synwall's own listeners receive the handed-off connections
//! and relay their bytes to upstreams.
//!
//! Event-loop threads (`[handoff] proxy_threads`, one per CPU by default),
//! each with edge-triggered epoll, its own sessions and its own listening
//! sockets on the protected addresses (SO_REUSEPORT: the kernel spreads new
//! connections over them), sharing only the limits below. For every session
//! the phases accept -> connect upstream -> relay -> close:
//! - **connect**: non-blocking, one upstream after another (round robin
//!   start, then failover), each attempt bounded by `connect_timeout_ms`.
//!   When every upstream failed the client is reset at once, unless an
//!   attempt of the round timed out while an upstream is alive (busy: its full
//!   accept queue drops SYNs): then they are all tried again.
//! - **relay**: each direction moves through its own pipe with `splice`, so
//!   payload never enters user space. A direction reads from its source only
//!   while its pipe has room, so a slow receiver stops the sender (TCP flow
//!   control does the rest). End of stream on one side becomes `shutdown`
//!   (half-close) on the other once the pipe is drained.
//! - **close**: when both directions are shut, on an error (the error's side
//!   is counted and the other side is reset), or after `idle_timeout_secs`
//!   without a byte moving.
//! - **shutdown**: the listeners close and new connections are reset; the
//!   open sessions go on for up to `shutdown_grace_secs`, and what has not
//!   finished then is reset on both sides, so no client takes a cut stream
//!   for a whole one.
//!
//! One source address (an IPv6 /64) holds at most `max_per_source` sessions,
//! so a single host cannot take every slot of `max_connections`; both
//! limits count the sessions of every loop.
//!
//! Edge-triggered epoll only reports changes, so every wake-up retries every
//! operation of the session until each has returned `EAGAIN` or a short
//! count (see [`pump`]); a session never waits on readiness it has not
//! observed as missing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use rustix::pipe::{PipeFlags, SpliceFlags};
use serde::Serialize;

use super::proxy_protocol;
use super::repair::HandedIn;
use crate::log_every::LogEvery;

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An upstream name did not resolve.
    #[error("upstream {0:?} does not resolve: {1}")]
    Resolve(String, std::io::Error),
    /// A protected address and port could not be listened on.
    #[error(
        "cannot listen on {addr}: {source} (proxy mode needs the protected port for synwall's own listener)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// epoll failed.
    #[error("proxy event loop: {0}")]
    Poll(std::io::Error),
}

/// Proxy settings, upstream names resolved.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Upstream addresses in configured order.
    pub upstreams: Vec<SocketAddr>,
    /// One connect attempt's limit.
    pub connect_timeout: Duration,
    /// Idle limit of a relaying session.
    pub idle_timeout: Duration,
    /// Sessions at once.
    pub max_connections: usize,
    /// Sessions at once from one source address (IPv6: one /64).
    pub max_per_source: usize,
    /// How long open sessions may go on once synwall stops.
    pub shutdown_grace: Duration,
    /// Send a PROXY v2 header to the upstream.
    pub proxy_protocol: bool,
    /// Requested bytes per pipe.
    pub pipe_size: usize,
}

/// Proxy counters, shared with the stats socket.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    sessions: AtomicU64,
    active: AtomicU64,
    rejected: AtomicU64,
    full: AtomicU64,
    rejected_source: AtomicU64,
    shutdown_resets: AtomicU64,
    completed: AtomicU64,
    upstream_connect_failures: AtomicU64,
    upstream_connect_timeouts: AtomicU64,
    upstream_retries: AtomicU64,
    upstream_unavailable: AtomicU64,
    upstream_errors: AtomicU64,
    client_errors: AtomicU64,
    idle_timeouts: AtomicU64,
    accept_errors: AtomicU64,
    internal_errors: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
    /// Passes of each event loop (at least one per tick): what the
    /// watchdog watches.
    loops: Vec<AtomicU64>,
    /// Open sessions per source (see [`source_key`]), of every loop.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// At `max_connections` when a loop last looked: the loops log the
    /// change once between them.
    full_now: AtomicBool,
    /// When an upstream last completed a connect, from any loop
    /// ([`since_start_ms`]; 0: never): see [`upstream_alive`].
    answered_ms: AtomicU64,
}

/// A copy of [`ProxyCounters`] for `synwall stats`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProxySnapshot {
    /// Client connections accepted (including rejected ones).
    pub sessions: u64,
    /// Sessions open now.
    pub active: u64,
    /// Reset at once because synwall was stopping. (At `max_connections`
    /// sessions a new client waits in the backlog instead.)
    pub rejected: u64,
    /// Times the proxy filled up (`max_connections` sessions open), from
    /// when new clients waited in the backlog until a session ended.
    pub full: u64,
    /// Reset at once because its source had `max_per_source` sessions open.
    pub rejected_source: u64,
    /// Reset on both sides when synwall stopped: not finished within
    /// `shutdown_grace_secs`.
    pub shutdown_resets: u64,
    /// Closed after both directions ended normally.
    pub completed: u64,
    /// Connect attempts an upstream refused or failed (each failover counts).
    pub upstream_connect_failures: u64,
    /// Connect attempts that hit `connect_timeout_ms`.
    pub upstream_connect_timeouts: u64,
    /// Rounds over every upstream begun again after a timeout, the
    /// upstreams busy (one answered within 10 s): a client waits.
    pub upstream_retries: u64,
    /// Clients reset because no upstream could be reached.
    pub upstream_unavailable: u64,
    /// Sessions ended by an upstream error (reset, broken pipe).
    pub upstream_errors: u64,
    /// Sessions ended by a client error.
    pub client_errors: u64,
    /// Sessions closed by the idle timeout.
    pub idle_timeouts: u64,
    /// `accept` failures (descriptor limits, aborted connections).
    pub accept_errors: u64,
    /// Sessions ended by our own resource failure (pipes, epoll).
    pub internal_errors: u64,
    /// Payload bytes relayed client -> upstream.
    pub bytes_to_upstream: u64,
    /// Payload bytes relayed upstream -> client.
    pub bytes_to_client: u64,
}

impl ProxyCounters {
    /// The counters of a proxy of `loops` event loops.
    pub fn new(loops: usize) -> ProxyCounters {
        ProxyCounters {
            loops: (0..loops).map(|_| AtomicU64::new(0)).collect(),
            ..ProxyCounters::default()
        }
    }

    /// For each event loop, a number that grows on every pass (at least
    /// every 50 ms).
    pub fn progress(&self) -> impl Iterator<Item = u64> + '_ {
        self.loops.iter().map(|n| n.load(Ordering::Relaxed))
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> ProxySnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxySnapshot {
            sessions: r(&self.sessions),
            active: r(&self.active),
            rejected: r(&self.rejected),
            full: r(&self.full),
            rejected_source: r(&self.rejected_source),
            shutdown_resets: r(&self.shutdown_resets),
            completed: r(&self.completed),
            upstream_connect_failures: r(&self.upstream_connect_failures),
            upstream_connect_timeouts: r(&self.upstream_connect_timeouts),
            upstream_retries: r(&self.upstream_retries),
            upstream_unavailable: r(&self.upstream_unavailable),
            upstream_errors: r(&self.upstream_errors),
            client_errors: r(&self.client_errors),
            idle_timeouts: r(&self.idle_timeouts),
            accept_errors: r(&self.accept_errors),
            internal_errors: r(&self.internal_errors),
            bytes_to_upstream: r(&self.bytes_to_upstream),
            bytes_to_client: r(&self.bytes_to_client),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The addresses synwall's listeners take for the protected ports: each
/// protected address, or 0.0.0.0 and [::] when none is configured.
pub fn listen_addrs(ports: &[u16], addresses: &[IpAddr]) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = if addresses.is_empty() {
        vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
    } else {
        addresses.to_vec()
    };
    ports
        .iter()
        .flat_map(|&port| ips.iter().map(move |&ip| SocketAddr::new(ip, port)))
        .collect()
}

/// Listening sockets on `addrs` (from [`listen_addrs`]), a set for each of
/// `loops` event loops; with more than one, every socket of an address has
/// SO_REUSEPORT, and the kernel spreads its connections over them. The
/// IPv6 wildcard is skipped, with a warning, when the host has no IPv6.
pub fn listen(
    addrs: &[SocketAddr],
    backlog: u32,
    loops: usize,
) -> Result<ListenerSets, ProxyError> {
    let loops = loops.max(1);
    let mut out: Vec<Vec<Listener>> = (0..loops).map(|_| Vec::new()).collect();
    for &addr in addrs {
        // A group of SO_REUSEPORT listeners would let any process of this
        // user join it and take a share of the connections: the address
        // must be free first, as for a single listener.
        let free = if loops > 1 {
            listen_one(addr, backlog, false).map(drop)
        } else {
            Ok(())
        };
        for set in out.iter_mut() {
            match free.and_then(|()| listen_one(addr, backlog, loops > 1)) {
                Ok(l) => set.push(Listener { addr, socket: l }),
                Err(e) if addr.ip() == Ipv6Addr::UNSPECIFIED && e == Errno::AFNOSUPPORT => {
                    tracing::warn!(%addr, "no IPv6 on this host; listening on IPv4 only");
                    break;
                }
                Err(e) => {
                    return Err(ProxyError::Listen {
                        addr,
                        source: e.into(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A set of listeners for each event loop (from [`listen`]).
pub type ListenerSets = Vec<Vec<Listener>>;

/// One of synwall's listening sockets and the address it is bound to.
#[derive(Debug)]
pub struct Listener {
    /// The address.
    pub addr: SocketAddr,
    /// The socket.
    pub socket: TcpListener,
}

/// What a reload gives the running proxy: new settings, the listeners of
/// newly protected addresses, and the addresses no longer protected, whose
/// listeners close. Sessions in progress go on.
#[derive(Debug)]
pub struct ProxyUpdate {
    /// The new settings (upstreams resolved).
    pub settings: ProxySettings,
    /// Listeners to add.
    pub open: Vec<Listener>,
    /// Listeners to close.
    pub close: Vec<SocketAddr>,
}

/// A reload's message to one event loop. A reload takes two steps, so that
/// it is in effect in every loop or in none ([`update_loops`]).
#[derive(Debug)]
pub enum ProxyMsg {
    /// Step 1, what can fail: the update's new listeners join the loop's
    /// epoll (the connections the program sends them wait in their
    /// backlogs until the commit). The answer says whether they all did; if
    /// one did not, those that did close again.
    Prepare(ProxyUpdate, Sender<Result<(), String>>),
    /// Step 2, every loop prepared: the settings take effect and the
    /// listeners of the addresses no longer protected close (nothing here
    /// can fail).
    Commit(Sender<()>),
    /// Step 2, a loop failed, stopped or did not answer: the prepared
    /// listeners close, and the settings stay.
    Abort(Sender<()>),
}

/// An update prepared in a loop, waiting for its commit or abort.
#[derive(Debug)]
struct Pending {
    settings: ProxySettings,
    close: Vec<SocketAddr>,
    /// The listener slots it took.
    added: Vec<usize>,
}

/// Applies a reload to the proxy's event loops (`updates`: one per loop,
/// in the order of `loops`) in every loop or in none: each loop prepares
/// its part and answers within `timeout`; then every loop commits, or,
/// when one failed, had stopped or did not answer, every loop aborts.
/// It waits, again up to `timeout`, until each loop that answered has
/// taken the verdict: after a commit new connections get the new settings
/// in every loop, and after an abort a reload tried again finds the new
/// addresses free. A silent loop takes its prepare and abort in order
/// when it runs again (channels keep them); until then it holds the new
/// listeners, and the error says so.
pub fn update_loops(
    loops: &[Sender<ProxyMsg>],
    updates: Vec<ProxyUpdate>,
    timeout: Duration,
) -> Result<(), String> {
    let prepare = updates
        .into_iter()
        .enumerate()
        .map(|(i, u)| (i, move |answer| ProxyMsg::Prepare(u, answer)));
    let mut first_error = None;
    let (mut answered, mut silent) = (Vec::new(), Vec::new());
    for (i, answer) in ask_loops(loops, prepare, timeout) {
        let why = match answer {
            Answer::Got(Ok(())) => {
                answered.push(i);
                continue;
            }
            Answer::Got(Err(e)) => {
                answered.push(i);
                format!("proxy loop {i}: {e}")
            }
            Answer::Silent => {
                silent.push(i);
                format!("proxy loop {i} did not answer within {timeout:?}")
            }
            Answer::Stopped => format!("proxy loop {i} has stopped"),
        };
        first_error.get_or_insert(why);
    }
    send_verdict(loops, &answered, first_error.is_none(), timeout);
    let Some(why) = first_error else {
        return Ok(());
    };
    for tx in silent.iter().filter_map(|&i| loops.get(i)) {
        let (done, _) = mpsc::channel();
        let _ = tx.send(ProxyMsg::Abort(done));
    }
    Err(if silent.is_empty() {
        why
    } else {
        format!("{why}; its new listeners close when it runs again")
    })
}

/// A loop's answer to one step of a reload.
enum Answer<T> {
    Got(T),
    /// No answer within the time allowed.
    Silent,
    /// The loop's channel is gone: it has stopped.
    Stopped,
}

/// Sends each loop of `asks` the message its function makes around a
/// fresh answer channel, then waits up to `timeout` for all the answers.
fn ask_loops<T, F: FnOnce(Sender<T>) -> ProxyMsg>(
    loops: &[Sender<ProxyMsg>],
    asks: impl IntoIterator<Item = (usize, F)>,
    timeout: Duration,
) -> Vec<(usize, Answer<T>)> {
    let sent: Vec<_> = asks
        .into_iter()
        .map(|(i, make)| {
            let (answer, rx) = mpsc::channel();
            let sent = loops.get(i).is_some_and(|l| l.send(make(answer)).is_ok());
            (i, sent.then_some(rx))
        })
        .collect();
    let deadline = Instant::now() + timeout;
    sent.into_iter()
        .map(|(i, rx)| {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match rx.map(|rx| rx.recv_timeout(left)) {
                Some(Ok(v)) => Answer::Got(v),
                Some(Err(mpsc::RecvTimeoutError::Timeout)) => Answer::Silent,
                _ => Answer::Stopped,
            };
            (i, answer)
        })
        .collect()
}

/// Sends a reload's verdict (`commit`, or an abort) to the loops `to`
/// and waits up to `timeout` until each has taken it; a loop that has not
/// is logged.
fn send_verdict(loops: &[Sender<ProxyMsg>], to: &[usize], commit: bool, timeout: Duration) {
    let (verdict, name): (fn(Sender<()>) -> ProxyMsg, _) = if commit {
        (ProxyMsg::Commit, "commit")
    } else {
        (ProxyMsg::Abort, "abort")
    };
    for (i, answer) in ask_loops(loops, to.iter().map(|&i| (i, verdict)), timeout) {
        match answer {
            Answer::Got(()) => {}
            Answer::Silent => tracing::warn!(
                proxy_loop = i,
                "a proxy loop has not taken the reload's {name} yet: it will when it runs again"
            ),
            Answer::Stopped => {
                tracing::warn!(
                    proxy_loop = i,
                    "a proxy loop stopped before the reload's {name}"
                )
            }
        }
    }
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family.
fn tcp_socket(addr: SocketAddr) -> rustix::io::Result<OwnedFd> {
    rustix::net::socket_with(
        family(addr),
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
}

fn listen_one(addr: SocketAddr, backlog: u32, shared: bool) -> rustix::io::Result<TcpListener> {
    let fd = tcp_socket(addr)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if shared {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog.min(i32::MAX as u32) as i32)?;
    Ok(TcpListener::from(fd))
}

fn family(addr: SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

/// epoll tokens: listeners have the top bit set; a session's two sockets
/// are `slot * 2` (client) and `slot * 2 + 1` (upstream).
const LISTENER: u64 = 1 << 63;
/// epoll token of the eventfd the repair engine writes after handing in a
/// connection (above every listener and session token).
const HANDED_IN: u64 = 1 << 62;
/// How often timeouts are checked (and accept retried after `EMFILE`).
const TICK: Duration = Duration::from_millis(50);
/// Empty pipes each event loop keeps for reuse, so a new session costs no
/// pipe2/fcntl calls.
pub const PIPE_POOL: usize = 1024;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes in the pipe.
    pending: usize,
    /// Its capacity in bytes.
    cap: usize,
    /// The size asked for (`pipe_size`).
    size: usize,
}

impl Pipe {
    fn new(size: usize) -> rustix::io::Result<Pipe> {
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // The kernel may refuse a size over a per-user quota; the default
        // (16 pages) still works, only slower.
        let cap = rustix::pipe::fcntl_setpipe_size(&w, size)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&w))?;
        Ok(Pipe {
            r,
            w,
            pending: 0,
            cap,
            size,
        })
    }
}

/// One direction of a session.
struct Direction {
    pipe: Pipe,
    /// The source reached end of stream.
    eof: bool,
    /// The destination was shut down for writing.
    shut: bool,
}

/// Which end of a direction failed.
enum Failed {
    Source,
    Destination,
}

/// Moves bytes from `src` through the pipe to `dst` until neither side can
/// go on (or the source ends); returns the bytes delivered to `dst`.
///
/// A side is done when it reports `EAGAIN` or moves less than it was
/// offered: a non-blocking TCP splice takes all the socket holds (or all its
/// send buffer takes) at once, so a short count means the socket was
/// drained (or full) then, and data (or room) that comes later is a new
/// edge for epoll. The pipe can also cut a read short (out of slots, with
/// many small segments), so the source is tried again whenever the pipe
/// has been emptied some since. That spares a wake-up the calls that could
/// only say `EAGAIN`.
fn pump(src: BorrowedFd, dst: BorrowedFd, d: &mut Direction) -> Result<u64, Failed> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut moved = 0u64;
    let (mut src_dry, mut dst_full) = (false, false);
    loop {
        let mut progress = false;
        if d.pipe.pending > 0 && !dst_full {
            let offered = d.pipe.pending;
            match rustix::pipe::splice(&d.pipe.r, None, dst, None, offered, flags) {
                Ok(n) => {
                    d.pipe.pending -= n;
                    moved += n as u64;
                    progress = n > 0;
                    dst_full = n < offered;
                    src_dry &= n == 0;
                }
                Err(Errno::AGAIN) => dst_full = true,
                Err(Errno::INTR) => progress = true,
                Err(_) => return Err(Failed::Destination),
            }
        }
        // Read only while the pipe has room: backpressure.
        if !d.eof && !src_dry && d.pipe.pending < d.pipe.cap {
            let room = d.pipe.cap - d.pipe.pending;
            match rustix::pipe::splice(src, None, &d.pipe.w, None, room, flags) {
                Ok(0) => {
                    d.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    d.pipe.pending += n;
                    progress = true;
                    src_dry = n < room;
                }
                Err(Errno::AGAIN) => src_dry = true,
                Err(Errno::INTR) => progress = true,
                Err(_) => return Err(Failed::Source),
            }
        }
        if !progress {
            return Ok(moved);
        }
    }
}

enum Phase {
    /// Waiting for the upstream connect; `tried` attempts made so far,
    /// starting at upstream `first`.
    Connecting {
        first: usize,
        tried: usize,
        /// Rounds over every upstream begun after the first.
        rounds: u32,
        /// An attempt of this round timed out (the upstream may be busy).
        timed_out: bool,
        deadline: Instant,
    },
    Relaying,
}

struct Session {
    client: TcpStream,
    client_addr: SocketAddr,
    upstream: Option<TcpStream>,
    phase: Phase,
    /// Client -> upstream.
    up: Direction,
    /// Upstream -> client.
    down: Direction,
    last_active: Instant,
}

/// How a session ended, and whose doing it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both directions finished.
    Completed,
    /// The client failed (reset); the upstream is reset too.
    Client,
    /// The upstream failed (reset); the client is reset too.
    Upstream,
    /// No upstream could be reached; the client is reset.
    Unavailable,
    /// Nothing moved for the idle timeout; both are closed.
    Idle,
    /// Our own failure (epoll registration).
    Internal,
    /// synwall stopped and the grace period ran out; both are reset.
    Shutdown,
}

/// The proxy's event loop and sessions.
pub struct Proxy<'a> {
    settings: ProxySettings,
    counters: &'a ProxyCounters,
    epoll: OwnedFd,
    /// By epoll token; a closed listener leaves its slot empty, so the
    /// tokens of the others stay valid.
    listeners: Vec<Option<Listener>>,
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    /// Slots closed during the current batch of events: reused only after
    /// it, so a stale event cannot reach a new session.
    dead: Vec<usize>,
    pipes: Vec<Pipe>,
    next_upstream: usize,
    /// Connections the workers rebuilt (`[handoff] engine = "repair"`).
    handed_in: Option<HandedIn>,
    /// synwall is stopping: no new sessions.
    draining: bool,
    /// Which of the proxy's event loops this is.
    index: usize,
    /// A reload prepared here, waiting for its verdict.
    pending: Option<Pending>,
    /// Sessions refused for want of a pipe, logged now and then.
    no_pipe: LogEvery,
    /// Accepts that failed for want of descriptors, logged now and then.
    no_fd: LogEvery,
}

/// The unit `max_per_source` counts: the address, or for IPv6 its /64
/// (one host's share of a network).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & (!0u128 << 64))),
        },
        v4 => v4,
    }
}

fn interest() -> epoll::EventFlags {
    epoll::EventFlags::IN
        | epoll::EventFlags::OUT
        | epoll::EventFlags::RDHUP
        | epoll::EventFlags::ET
}

/// Resets the connection when it is closed (SO_LINGER 0), so the peer
/// learns at once that its data went nowhere.
fn reset_on_close(s: &TcpStream) {
    let _ = sockopt::set_socket_linger(s, Some(Duration::ZERO));
}

impl<'a> Proxy<'a> {
    /// Event loop `index` of the proxy, with its listeners.
    pub fn new(
        index: usize,
        listeners: Vec<Listener>,
        settings: ProxySettings,
        counters: &'a ProxyCounters,
    ) -> Result<Proxy<'a>, ProxyError> {
        let ep =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| ProxyError::Poll(e.into()))?;
        let mut proxy = Proxy {
            settings,
            counters,
            epoll: ep,
            listeners: Vec::new(),
            sessions: Vec::new(),
            free: Vec::new(),
            dead: Vec::new(),
            pipes: Vec::new(),
            // Each loop starts its round robin at its own upstream.
            next_upstream: index,
            handed_in: None,
            draining: false,
            index,
            pending: None,
            no_pipe: LogEvery::new(Duration::from_secs(1)),
            no_fd: LogEvery::new(Duration::from_secs(1)),
        };
        for l in listeners {
            proxy.add_listener(l)?;
        }
        Ok(proxy)
    }

    /// Takes the connections the repair engines rebuild from `from`.
    pub fn hand_in_from(&mut self, from: HandedIn) -> Result<(), ProxyError> {
        epoll::add(
            &self.epoll,
            from.wake(),
            epoll::EventData::new_u64(HANDED_IN),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| ProxyError::Poll(e.into()))?;
        self.handed_in = Some(from);
        Ok(())
    }

    /// Opens a session for each connection handed in so far, as many as
    /// there is room for; the rest wait their turn (a tick, or a session's
    /// end), as in a listener's accept queue.
    fn take_handed_in(&mut self) {
        let Some(from) = &self.handed_in else {
            return;
        };
        // Draining, every one is taken, to be reset (counted); otherwise
        // as many as there are places for, taken first.
        if self.draining {
            for r in from.take(usize::MAX) {
                self.open(r.stream, r.peer, false);
            }
            return;
        }
        // Places for those waiting only: the loops share them.
        let places = self.reserve(from.waiting());
        let got = from.take(places);
        self.release(places - got.len());
        for r in got {
            self.open(r.stream, r.peer, false);
        }
        if places == 0 {
            self.room();
        }
    }

    /// Takes up to `k` of the `max_connections` places at once (the loops
    /// share them); how many it got.
    fn reserve(&self, k: usize) -> usize {
        let max = self.settings.max_connections as u64;
        let mut got = 0;
        let _ = self
            .counters
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                got = max.saturating_sub(n).min(k as u64);
                (got > 0).then_some(n + got)
            });
        got as usize
    }

    /// Gives back `k` places.
    fn release(&self, k: usize) {
        if k > 0 {
            self.counters.active.fetch_sub(k as u64, Ordering::Relaxed);
        }
    }

    /// Sessions that may open now: `max_connections` less those open. A
    /// client beyond waits in the backlog, as with the kernel alone, where
    /// a server's full accept queue makes clients wait, never resets them.
    /// Says so (log and `full`) when the proxy fills up, and when it has
    /// room again.
    fn room(&mut self) -> usize {
        let open = self.counters.active.load(Ordering::Relaxed);
        let room = (self.settings.max_connections as u64).saturating_sub(open) as usize;
        let full = room == 0;
        let now = &self.counters.full_now;
        if now.load(Ordering::Relaxed) != full && now.swap(full, Ordering::Relaxed) != full {
            if full {
                bump(&self.counters.full);
                tracing::warn!(
                    sessions = open,
                    "proxy full: [handoff] max_connections sessions are open; \
                     new clients wait in the backlog"
                );
            } else {
                tracing::info!(sessions = open, "proxy has room again");
            }
        }
        room
    }

    /// Adds `l` to the loop; its slot.
    fn add_listener(&mut self, l: Listener) -> Result<usize, ProxyError> {
        l.socket.set_nonblocking(true).map_err(ProxyError::Poll)?;
        epoll::add(
            &self.epoll,
            &l.socket,
            epoll::EventData::new_u64(LISTENER | self.listeners.len() as u64),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| ProxyError::Poll(e.into()))?;
        self.listeners.push(Some(l));
        Ok(self.listeners.len() - 1)
    }

    /// Takes one step of a reload ([`ProxyMsg`]) and answers it.
    fn on_reload(&mut self, m: ProxyMsg) {
        match m {
            ProxyMsg::Prepare(u, answer) => {
                let _ = answer.send(self.prepare(u).map_err(|e| e.to_string()));
            }
            ProxyMsg::Commit(done) => {
                self.commit();
                let _ = done.send(());
            }
            ProxyMsg::Abort(done) => {
                self.abort();
                let _ = done.send(());
            }
        }
    }

    /// A reload's first step: the new listeners join the loop, all of them
    /// or (on an error) none; the settings wait for the commit, and so do
    /// the clients that reach a new listener (its backlog holds them), so
    /// that no client is served under a reload that may yet fail.
    fn prepare(&mut self, u: ProxyUpdate) -> Result<(), ProxyError> {
        if self.pending.is_some() {
            // The reload that prepared it sent no verdict (none is lost
            // otherwise: channels keep order): it is not applied.
            tracing::warn!(
                proxy_loop = self.index,
                "a reload left unfinished is dropped"
            );
            self.abort();
        }
        let mut added = Vec::new();
        // Draining, a reload opens nothing (the new listeners close here).
        let draining = self.draining;
        for l in u.open.into_iter().filter(|_| !draining) {
            match self.add_listener(l) {
                Ok(slot) => added.push(slot),
                Err(e) => {
                    for slot in added {
                        // Closing the socket also takes it out of epoll.
                        self.listeners[slot] = None;
                    }
                    return Err(e);
                }
            }
        }
        self.pending = Some(Pending {
            settings: u.settings,
            close: u.close,
            added,
        });
        Ok(())
    }

    /// A reload's second step when every loop prepared: sessions keep
    /// their upstream and pipes; new ones get the new settings.
    fn commit(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if p.settings.pipe_size != self.settings.pipe_size {
            self.pipes.clear();
        }
        self.settings = p.settings;
        for slot in &mut self.listeners {
            if slot.as_ref().is_some_and(|l| p.close.contains(&l.addr)) {
                *slot = None;
            }
        }
        // Their edges may have come and gone while they waited.
        for slot in p.added {
            self.accept(slot);
        }
    }

    /// A reload's second step when a loop did not prepare: the listeners
    /// it opened close (the kernel resets the connections in their
    /// backlogs: none was taken).
    fn abort(&mut self) {
        if let Some(p) = self.pending.take() {
            for slot in p.added {
                self.listeners[slot] = None;
            }
        }
    }

    /// Serves until `stop` is set, then drains: the listeners close, the
    /// open sessions go on for up to `shutdown_grace`, and the rest is
    /// reset. Applies the updates that arrive on `updates` as it goes.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        updates: &mpsc::Receiver<ProxyMsg>,
    ) -> Result<(), ProxyError> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        let mut drain_until = None;
        loop {
            if drain_until.is_none() && stop.load(Ordering::Relaxed) {
                drain_until = Some(Instant::now() + self.settings.shutdown_grace);
                self.start_draining();
            }
            let open = self.counters.active.load(Ordering::Relaxed);
            if drain_until.is_some_and(|t| open == 0 || Instant::now() >= t) {
                break;
            }
            if let Err(e) = self.turn(&mut events, &mut next_tick) {
                // Its sessions end here, reset, and leave the shared
                // counts: the other loops' limits and drain see them gone.
                self.close_all();
                return Err(e);
            }
            while let Ok(m) = updates.try_recv() {
                self.on_reload(m);
            }
        }
        // Connections handed in since the last pass are reset too.
        self.take_handed_in();
        self.close_all();
        Ok(())
    }

    /// Resets every open session.
    fn close_all(&mut self) {
        for slot in 0..self.sessions.len() {
            if self.sessions[slot].is_some() {
                self.close(slot, End::Shutdown);
            }
        }
    }

    /// One pass of the event loop: the events of up to one tick, then the
    /// tick's timeouts when it is due.
    fn turn(
        &mut self,
        events: &mut Vec<epoll::Event>,
        next_tick: &mut Instant,
    ) -> Result<(), ProxyError> {
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: TICK.as_nanos() as i64,
        };
        events.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            Some(&timeout),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(ProxyError::Poll(e.into())),
        }
        for ev in events.iter() {
            let token = ev.data.u64();
            if token == HANDED_IN {
                self.take_handed_in();
            } else if token & LISTENER != 0 {
                self.accept((token & !LISTENER) as usize);
            } else {
                self.drive((token >> 1) as usize, token & 1 == 1);
            }
        }
        let now = Instant::now();
        if now >= *next_tick {
            self.tick(now);
            *next_tick = now + TICK;
        }
        self.free.append(&mut self.dead);
        if let Some(n) = self.counters.loops.get(self.index) {
            bump(n);
        }
        Ok(())
    }

    /// synwall is stopping: the listeners close (the kernel resets what
    /// their backlogs held), and connections handed in from now on are
    /// reset.
    fn start_draining(&mut self) {
        self.draining = true;
        self.listeners.iter_mut().for_each(|l| *l = None);
        if self.index == 0 {
            tracing::info!(
                sessions = self.counters.active.load(Ordering::Relaxed),
                grace_secs = self.settings.shutdown_grace.as_secs(),
                "proxy draining"
            );
        }
    }

    /// Accepts while there are places: each is taken before its client,
    /// so a client beyond `max_connections` waits in the backlog even when
    /// another loop took the last place meanwhile.
    fn accept(&mut self, listener: usize) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.added.contains(&listener))
        {
            return; // opened by a reload not committed yet
        }
        loop {
            let Some(Some(l)) = self.listeners.get(listener) else {
                return;
            };
            if self.reserve(1) == 0 {
                self.room();
                return;
            }
            // Non-blocking from the start: no fcntl per session.
            let accepted = rustix::net::acceptfrom_with(
                &l.socket,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            )
            .map_err(std::io::Error::from)
            .and_then(|(fd, peer)| {
                let peer = peer
                    .and_then(|p| SocketAddr::try_from(p).ok())
                    .ok_or_else(|| std::io::Error::other("accept gave no peer address"))?;
                Ok((TcpStream::from(fd), peer))
            });
            match accepted {
                Ok((stream, peer)) => self.open(stream, peer, true),
                Err(e) => {
                    self.release(1);
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        return;
                    }
                    bump(&self.counters.accept_errors);
                    // Out of descriptors: the rest waits in the backlog and
                    // the next tick retries.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENFILE | libc::EMFILE | libc::ENOBUFS)
                    ) {
                        if let Some(failed) = self.no_fd.note() {
                            tracing::warn!(proxy_loop = self.index, failed, "proxy accept: {e}");
                        }
                        return;
                    }
                }
            }
        }
    }

    fn take_pipe(&mut self) -> rustix::io::Result<Pipe> {
        match self.pipes.pop() {
            Some(p) => Ok(p),
            None => Pipe::new(self.settings.pipe_size),
        }
    }

    /// A session for `client` (`nonblocking`: accepted so), which holds a
    /// place unless the proxy is draining, or its reset.
    fn open(&mut self, client: TcpStream, peer: SocketAddr, nonblocking: bool) {
        let c = self.counters;
        bump(&c.sessions);
        let Some((up, down)) = self.admit(peer) else {
            reset_on_close(&client);
            return;
        };
        if !nonblocking {
            let _ = client.set_nonblocking(true);
        }
        let _ = client.set_nodelay(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        let registered = epoll::add(
            &self.epoll,
            &client,
            epoll::EventData::new_u64(slot as u64 * 2),
            interest(),
        );
        let first = self.next_upstream;
        self.next_upstream = (first + 1) % self.settings.upstreams.len().max(1);
        let now = Instant::now();
        let direction = |pipe| Direction {
            pipe,
            eof: false,
            shut: false,
        };
        self.sessions[slot] = Some(Session {
            client,
            client_addr: peer,
            upstream: None,
            phase: Phase::Connecting {
                first,
                tried: 0,
                rounds: 0,
                timed_out: false,
                deadline: now,
            },
            up: direction(up),
            down: direction(down),
            last_active: now,
        });
        if registered.is_err() {
            self.close(slot, End::Internal);
            return;
        }
        self.connect_next(slot);
    }

    /// Whether a new client, which holds a place of `max_connections`
    /// unless the proxy is draining, may have a session (not draining, its
    /// source under its cap, two pipes to be had): the pipes and its count
    /// in its source's taken, or `None`, counted and its place given back.
    /// The loops share the per-source tally, under its lock.
    fn admit(&mut self, peer: SocketAddr) -> Option<(Pipe, Pipe)> {
        let c = self.counters;
        if self.draining {
            bump(&c.rejected);
            return None;
        }
        let source = source_key(peer.ip());
        if !self.count_source(source, true) {
            self.release(1);
            bump(&c.rejected_source);
            return None;
        }
        match (self.take_pipe(), self.take_pipe()) {
            (Ok(up), Ok(down)) => Some((up, down)),
            (a, b) => {
                if let Some(e) = a.as_ref().err().or(b.as_ref().err()) {
                    self.warn_no_pipe(*e);
                }
                self.pipes.extend(a.ok().into_iter().chain(b.ok()));
                self.count_source(source, false);
                self.release(1);
                bump(&c.internal_errors);
                None
            }
        }
    }

    /// Says (at most once a second, with how many since) that a session
    /// was refused for want of a pipe (descriptors, memory, or the user's
    /// pipe pages are out: the error says which), which `internal_errors`
    /// alone would not tell.
    fn warn_no_pipe(&mut self, e: Errno) {
        if let Some(refused) = self.no_pipe.note() {
            tracing::warn!(
                proxy_loop = self.index,
                refused,
                "proxy: no pipe for a new session ({e}): it is reset"
            );
        }
    }

    /// Counts a session of `source` in (if under `max_per_source`; false
    /// if not) or out.
    fn count_source(&self, source: IpAddr, open: bool) -> bool {
        let mut tally = self
            .counters
            .per_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open {
            let n = tally.entry(source).or_default();
            if *n >= self.settings.max_per_source {
                return false;
            }
            *n += 1;
        } else if let Some(n) = tally.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                tally.remove(&source);
            }
        }
        true
    }

    /// Starts a connect to the next upstream not yet tried. When none is
    /// left, a round in which an attempt timed out (`timed_out`) starts again if
    /// the upstreams are alive ([`upstream_alive`]), the client is still
    /// there, the session is younger than the idle timeout and synwall is
    /// not stopping; otherwise the client is reset.
    fn connect_next(&mut self, slot: usize) {
        let n = self.settings.upstreams.len();
        loop {
            let Some(s) = self.sessions[slot].as_mut() else {
                return;
            };
            let Phase::Connecting {
                first,
                tried,
                rounds,
                timed_out,
                deadline,
            } = &mut s.phase
            else {
                return;
            };
            if *tried >= n {
                let now = Instant::now();
                let young =
                    now.saturating_duration_since(s.last_active) < self.settings.idle_timeout;
                if !(*timed_out
                    && young
                    && !self.draining
                    && upstream_alive(self.counters, now)
                    && client_present(&s.client))
                {
                    self.close(slot, End::Unavailable);
                    return;
                }
                // A new round only after a timeout in this one: a round
                // whose every connect fails at once ends the session.
                *timed_out = false;
                *tried = 0;
                *rounds += 1;
                bump(&self.counters.upstream_retries);
                continue;
            }
            let addr = self.settings.upstreams[(*first + *tried) % n];
            *tried += 1;
            // Each round waits twice as long as the one before (up to 8
            // times connect_timeout_ms), as the kernel spaces out its SYNs:
            // a busy upstream is not hammered.
            *deadline = Instant::now() + self.settings.connect_timeout * (1u32 << (*rounds).min(3));
            s.upstream = None;
            match start_connect(addr) {
                Ok(stream) => {
                    if epoll::add(
                        &self.epoll,
                        &stream,
                        epoll::EventData::new_u64(slot as u64 * 2 + 1),
                        interest(),
                    )
                    .is_err()
                    {
                        self.close(slot, End::Internal);
                        return;
                    }
                    s.upstream = Some(stream);
                    return;
                }
                Err(e) => {
                    tracing::debug!(%addr, "upstream connect: {e}");
                    bump(&self.counters.upstream_connect_failures);
                }
            }
        }
    }

    /// Handles readiness on one of a session's sockets.
    fn drive(&mut self, slot: usize, upstream_side: bool) {
        let Some(s) = self.sessions.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Phase::Connecting { .. } = s.phase {
            // Client bytes wait in the client's socket until the upstream
            // is there; the relay below retries everything. A client reset
            // meanwhile ends the session now, not when the connect attempts
            // run out (an end of stream waits for the relay: a client may
            // half-close and wait for a server that speaks first).
            if !upstream_side {
                if !matches!(sockopt::socket_error(&s.client), Ok(Ok(()))) {
                    self.close(slot, End::Client);
                }
                return;
            }
            let Some(up) = &s.upstream else { return };
            match sockopt::socket_error(up) {
                Ok(Ok(())) if up.peer_addr().is_ok() => {}
                Ok(Ok(())) => return, // still in progress
                _ => {
                    bump(&self.counters.upstream_connect_failures);
                    self.connect_next(slot);
                    return;
                }
            }
            self.counters
                .answered_ms
                .store(since_start_ms(Instant::now()), Ordering::Relaxed);
            s.phase = Phase::Relaying;
            s.last_active = Instant::now();
            if self.settings.proxy_protocol {
                let mut hdr = [0u8; proxy_protocol::MAX_LEN];
                // The address the client reached, asked only here: only
                // the PROXY header names it.
                let local = s.client.local_addr().unwrap_or(s.client_addr);
                let len = proxy_protocol::encode(s.client_addr, local, &mut hdr);
                // A fresh connection's send buffer always takes these few
                // bytes; anything else is an upstream failure.
                if rustix::net::send(up, &hdr[..len], rustix::net::SendFlags::NOSIGNAL) != Ok(len) {
                    self.close(slot, End::Upstream);
                    return;
                }
            }
        }
        match relay(s, self.counters) {
            Ok(false) => {}
            Ok(true) => self.close(slot, End::Completed),
            Err(end) => self.close(slot, end),
        }
    }

    /// Timeouts, and a retry for connections left in a backlog (a
    /// listener's, or the repair engines' hand-off).
    fn tick(&mut self, now: Instant) {
        // Says when the proxy has room again (and re-arms "full").
        self.room();
        for slot in 0..self.sessions.len() {
            let Some(s) = &self.sessions[slot] else {
                continue;
            };
            match s.phase {
                Phase::Connecting { deadline, .. } if now >= deadline => {
                    bump(&self.counters.upstream_connect_timeouts);
                    if let Some(Session {
                        phase: Phase::Connecting { timed_out, .. },
                        ..
                    }) = self.sessions[slot].as_mut()
                    {
                        *timed_out = true;
                    }
                    self.connect_next(slot);
                }
                Phase::Relaying
                    if now.duration_since(s.last_active) >= self.settings.idle_timeout =>
                {
                    self.close(slot, End::Idle);
                }
                _ => {}
            }
        }
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
        self.take_handed_in();
    }

    fn close(&mut self, slot: usize, end: End) {
        let Some(s) = self.sessions[slot].take() else {
            return;
        };
        let c = self.counters;
        match end {
            End::Completed => bump(&c.completed),
            End::Client => {
                bump(&c.client_errors);
                s.upstream.iter().for_each(reset_on_close);
            }
            End::Upstream => {
                bump(&c.upstream_errors);
                reset_on_close(&s.client);
            }
            End::Unavailable => {
                bump(&c.upstream_unavailable);
                reset_on_close(&s.client);
            }
            End::Idle => bump(&c.idle_timeouts),
            End::Internal => {
                bump(&c.internal_errors);
                reset_on_close(&s.client);
            }
            End::Shutdown => {
                bump(&c.shutdown_resets);
                reset_on_close(&s.client);
                s.upstream.iter().for_each(reset_on_close);
            }
        }
        c.active.fetch_sub(1, Ordering::Relaxed);
        self.count_source(source_key(s.client_addr.ip()), false);
        for d in [s.up, s.down] {
            let reusable = d.pipe.pending == 0 && d.pipe.size == self.settings.pipe_size;
            if reusable && self.pipes.len() < PIPE_POOL {
                self.pipes.push(d.pipe);
            }
        }
        self.dead.push(slot);
        // The sockets close here, which also removes them from epoll.
    }
}

/// How long an upstream that completed a connect counts as alive.
const UPSTREAM_ALIVE: Duration = Duration::from_secs(10);

/// Milliseconds from the first call in this process to `t`, plus one (0
/// says "never").
fn since_start_ms(t: Instant) -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    t.saturating_duration_since(start).as_millis() as u64 + 1
}

/// Whether an upstream completed a connect, from any event loop, within
/// [`UPSTREAM_ALIVE`]: when a connect then times out, the upstreams are
/// busy, not dead (a full accept queue drops SYNs, and with the kernel
/// alone the client would send its SYN again and be served), and the
/// session tries them all again. Upstreams that have not answered for
/// that long are dead, and the client is reset at once, as before.
fn upstream_alive(c: &ProxyCounters, now: Instant) -> bool {
    let last = c.answered_ms.load(Ordering::Relaxed);
    last != 0 && since_start_ms(now).saturating_sub(last) < UPSTREAM_ALIVE.as_millis() as u64
}

/// Whether the client is still there: no error (a reset) on its socket,
/// and no end of stream at the front of what it sent (a peek). A client
/// that half-closed without sending a byte counts as gone.
fn client_present(client: &TcpStream) -> bool {
    if !matches!(sockopt::socket_error(client), Ok(Ok(()))) {
        return false;
    }
    let mut b = [0u8; 1];
    match rustix::net::recv(
        client,
        &mut b,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => false,
        Ok(_) => true,
        Err(e) => e == Errno::AGAIN,
    }
}

fn start_connect(addr: SocketAddr) -> rustix::io::Result<TcpStream> {
    let fd = tcp_socket(addr)?;
    sockopt::set_tcp_nodelay(&fd, true)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e),
    }
}

/// Relays both directions; `Ok(true)` when the session is finished.
fn relay(s: &mut Session, c: &ProxyCounters) -> Result<bool, End> {
    let Some(upstream) = &s.upstream else {
        return Ok(false);
    };
    let (client, upstream) = (s.client.as_fd(), upstream.as_fd());
    let ended_before = (s.up.eof, s.down.eof);
    let sent = pump(client, upstream, &mut s.up).map_err(|f| match f {
        Failed::Source => End::Client,
        Failed::Destination => End::Upstream,
    })?;
    let received = pump(upstream, client, &mut s.down).map_err(|f| match f {
        Failed::Source => End::Upstream,
        Failed::Destination => End::Client,
    })?;
    if sent > 0 {
        c.bytes_to_upstream.fetch_add(sent, Ordering::Relaxed);
    }
    if received > 0 {
        c.bytes_to_client.fetch_add(received, Ordering::Relaxed);
    }
    if sent + received > 0 || ended_before != (s.up.eof, s.down.eof) {
        s.last_active = Instant::now();
    }
    // Half-close: an ended source becomes a FIN once its bytes are out.
    for (d, dst) in [(&mut s.up, upstream), (&mut s.down, client)] {
        if d.eof && d.pipe.pending == 0 && !d.shut {
            d.shut = true;
            // A failure means the peer is gone already; the other
            // direction reports that.
            let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
        }
    }
    Ok(s.up.shut && s.down.shut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(upstream_port: u16) -> ProxySettings {
        ProxySettings {
            upstreams: vec![SocketAddr::new([198, 18, 0, 1].into(), upstream_port)],
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_connections: 100,
            max_per_source: 10,
            shutdown_grace: Duration::from_secs(1),
            proxy_protocol: false,
            pipe_size: 65536,
        }
    }

    /// A listener no client ever reaches (loopback, a port of its own).
    fn listener() -> Listener {
        let socket = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        Listener {
            addr: socket.local_addr().unwrap(),
            socket,
        }
    }

    fn open_addrs(p: &Proxy) -> Vec<SocketAddr> {
        p.listeners.iter().flatten().map(|l| l.addr).collect()
    }

    /// What each loop ends a reload with: its listeners' addresses and its
    /// upstream's port.
    type LoopState = (Vec<SocketAddr>, u16);

    /// Two loops, each with a listener; `update_loops` gives each an
    /// update that closes it, opens another and moves the upstream to
    /// port 2. Loop 0 answers from a thread; loop 1 too if `both_answer`,
    /// else it is silent until the reload has returned, and then takes
    /// what was queued for it. Returns the reload's result, each loop's
    /// state and the new listeners' addresses.
    fn reload(both_answer: bool) -> (Result<(), String>, Vec<LoopState>, Vec<SocketAddr>) {
        let counters = ProxyCounters::new(2);
        let new = [listener(), listener()];
        let opened = new.each_ref().map(|l| l.addr).to_vec();
        let mut loops: Vec<Proxy> = (0..2)
            .map(|i| Proxy::new(i, vec![listener()], settings(1), &counters).unwrap())
            .collect();
        let updates = new
            .into_iter()
            .zip(&loops)
            .map(|(l, p)| ProxyUpdate {
                settings: settings(2),
                open: vec![l],
                close: open_addrs(p),
            })
            .collect();
        let (channels, mut inboxes): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel()).unzip();
        let silent = (!both_answer).then(|| (loops.pop().unwrap(), inboxes.pop().unwrap()));
        let result = std::thread::scope(|s| {
            let answering: Vec<_> = loops
                .drain(..)
                .zip(inboxes)
                .map(|(mut p, inbox)| {
                    s.spawn(move || {
                        for m in inbox {
                            p.on_reload(m);
                        }
                        p
                    })
                })
                .collect();
            // Long enough for a loaded machine's thread to answer.
            let timeout = Duration::from_millis(if both_answer { 10_000 } else { 2_000 });
            let result = update_loops(&channels, updates, timeout);
            drop(channels);
            loops.extend(answering.into_iter().map(|h| h.join().unwrap()));
            result
        });
        if let Some((mut p, inbox)) = silent {
            while let Ok(m) = inbox.try_recv() {
                p.on_reload(m);
            }
            loops.push(p);
        }
        let state = loops
            .iter()
            .map(|p| (open_addrs(p), p.settings.upstreams[0].port()))
            .collect();
        (result, state, opened)
    }

    /// A reload is in effect in every proxy loop or in none. One loop
    /// silent past the timeout: the reload fails, and every loop ends with
    /// its old listener and upstream, the new listeners closed (their
    /// addresses free for a reload tried again). Every loop answering:
    /// every loop has the new listener, not the old, and the new upstream.
    #[test]
    fn a_reload_is_applied_in_every_proxy_loop_or_in_none() {
        let (result, state, opened) = reload(false);
        let why = result.unwrap_err();
        assert!(why.contains("proxy loop 1 did not answer"), "{why}");
        assert!(why.contains("close when it runs again"), "{why}");
        for (i, (addrs, upstream)) in state.iter().enumerate() {
            assert_eq!(
                *upstream, 1,
                "loop {i} took the settings of a failed reload"
            );
            assert_eq!(addrs.len(), 1, "loop {i}: {addrs:?}");
            assert!(!opened.contains(&addrs[0]), "loop {i} kept a new listener");
        }
        for addr in opened {
            TcpListener::bind(addr).expect("a failed reload's listener is closed");
        }

        let (result, state, opened) = reload(true);
        result.unwrap();
        for (i, (addrs, upstream)) in state.iter().enumerate() {
            assert_eq!(*upstream, 2, "loop {i}");
            assert_eq!(addrs, &[opened[i]], "loop {i}");
        }
    }

    /// Runs `f` on a thread of its own in a new network namespace whose
    /// loopback is up (root; deleted after), so that its clients and
    /// upstreams stay off the host's own; false without root.
    fn in_netns(f: impl FnOnce() + Send) -> bool {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return false;
        }
        let name = format!("swpx{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = std::process::Command::new("ip").args(args).status();
            assert!(ok.is_ok_and(|s| s.success()), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let _gone = Gone(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                f()
            })
            .join()
            .unwrap()
        });
        true
    }

    /// A reload's new listener serves no client before the commit: the
    /// client waits in its backlog, then the commit serves it (under the
    /// new settings); an abort resets it, never served.
    #[test]
    fn a_reload_serves_no_client_before_its_commit() {
        in_netns(|| {
            let counters = ProxyCounters::new(1);
            // An upstream that refuses: a session opens, then fails over.
            let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let mut to = settings(0);
            to.upstreams = vec![closed.local_addr().unwrap()];
            drop(closed);
            let mut p = Proxy::new(0, vec![], to.clone(), &counters).unwrap();
            let sessions = || counters.snapshot().sessions;
            let prepare = |p: &mut Proxy, l: Listener| {
                let (answer, got) = mpsc::channel();
                let u = ProxyUpdate {
                    settings: to.clone(),
                    open: vec![l],
                    close: vec![],
                };
                p.on_reload(ProxyMsg::Prepare(u, answer));
                got.recv().unwrap().unwrap();
            };

            let l = listener();
            let addr = l.addr;
            prepare(&mut p, l);
            let _client = std::net::TcpStream::connect(addr).unwrap();
            p.tick(Instant::now());
            assert_eq!(sessions(), 0, "served before the commit");
            p.on_reload(ProxyMsg::Commit(mpsc::channel().0));
            assert_eq!(sessions(), 1, "the commit serves the waiting client");

            let l = listener();
            let addr = l.addr;
            prepare(&mut p, l);
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            p.tick(Instant::now());
            p.on_reload(ProxyMsg::Abort(mpsc::channel().0));
            assert_eq!(sessions(), 1, "served under a reload that failed");
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let e = std::io::Read::read(&mut client, &mut [0; 1]).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        });
    }

    #[test]
    fn a_source_is_its_address_or_its_ipv6_64() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("198.18.0.2"), "198.18.0.2");
        assert_eq!(key("2001:2::1:2:3:4"), "2001:2::");
        assert_eq!(key("2001:2:0:5:1:2:3:4"), "2001:2:0:5::");
        assert_eq!(key("::ffff:198.18.0.2"), "198.18.0.2");
    }
}
