//! What this host (this network namespace, this process) offers:
//! interfaces, listening sockets, the descriptor limit.

use std::path::Path;

/// An interface's index and its receive-queue count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Receive queues (at least 1).
    pub rx_queues: u32,
}

/// Looks up `ifname` in this network namespace: its index by
/// `SIOCGIFINDEX` and its queues by `ETHTOOL_GCHANNELS`, both asked of a
/// socket of this namespace. Not /sys: a systemd unit joined to another
/// namespace (`NetworkNamespacePath=`) keeps the /sys of the namespace it
/// started in, where the interface is missing or another one has its name.
pub fn interface(ifname: &str) -> std::io::Result<Interface> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    let ifindex = rustix::net::netdevice::name_to_index(&sock, ifname)?;
    let queues = match crate::xdp::ethtool::rx_channels(ifname)? {
        Some(n) if n > 0 => n,
        // No channels from the driver: /sys, if it shows this namespace.
        _ => sysfs_rx_queues(ifname, ifindex).unwrap_or(1),
    };
    Ok(Interface {
        ifindex,
        rx_queues: queues.max(1),
    })
}

/// `ifname`'s transmit queues in use (the kernel's real_num_tx_queues),
/// from /sys if it shows this namespace's interface `ifindex`; no ioctl
/// tells them.
pub fn tx_queues(ifname: &str, ifindex: u32) -> Option<u32> {
    sysfs_queues(ifname, ifindex, "tx-")
}

/// `ifname`'s receive queues from /sys, if the /sys mounted here shows the
/// interface with index `ifindex` (that is, this namespace's).
fn sysfs_rx_queues(ifname: &str, ifindex: u32) -> Option<u32> {
    sysfs_queues(ifname, ifindex, "rx-")
}

/// The entries of `ifname`'s /sys queues folder named `kind`N, if that
/// /sys shows the interface with index `ifindex`.
fn sysfs_queues(ifname: &str, ifindex: u32, kind: &str) -> Option<u32> {
    let dir = Path::new("/sys/class/net").join(ifname);
    let idx = std::fs::read_to_string(dir.join("ifindex")).ok()?;
    if idx.trim().parse::<u32>().ok()? != ifindex {
        return None;
    }
    let queues = std::fs::read_dir(dir.join("queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(kind))
        .count();
    u32::try_from(queues).ok()
}

/// Linux capability numbers (include/uapi/linux/capability.h).
pub mod cap {
    /// Bind ports below 1024.
    pub const NET_BIND_SERVICE: u32 = 10;
    /// Network configuration: attach XDP and TC.
    pub const NET_ADMIN: u32 = 12;
    /// Raw sockets: AF_XDP.
    pub const NET_RAW: u32 = 13;
    /// Everything the others do not cover.
    pub const SYS_ADMIN: u32 = 21;
    /// Performance monitoring: the verifier's pointer checks.
    pub const PERFMON: u32 = 38;
    /// BPF programs and maps.
    pub const BPF: u32 = 39;
}

/// This process's effective capabilities (CapEff in /proc/self/status) as
/// a bit set; `None` if unreadable.
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The CPUs this process may run on (and so pin workers to).
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect::<Vec<_>>())
        .filter(|ids| !ids.is_empty())
        .unwrap_or_else(|| vec![0])
}

/// `net.ipv4.tcp_syncookies` in this network namespace, if readable. The
/// kfunc hand-off goes through the kernel's SYN-cookie check, which 0
/// turns off.
pub fn tcp_syncookies() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True when some socket listens on TCP `port` (any address, IPv4 or
/// IPv6), from /proc/net/tcp{,6} of this network namespace.
pub fn is_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| t.lines().skip(1).any(|l| listens_on(l, port)))
    })
}

/// One line of /proc/net/tcp: `sl local_address rem_address st ...`, the
/// local port in hex after the last colon, state 0A = TCP_LISTEN.
fn listens_on(line: &str, port: u16) -> bool {
    let mut cols = line.split_whitespace();
    let local = cols.nth(1).unwrap_or("");
    let state = cols.nth(1).unwrap_or("");
    state == "0A"
        && local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
            == Some(port)
}

/// Raises the soft descriptor limit to the hard one; returns the limit now
/// in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listeners_from_proc_lines() {
        let listen_80 = "   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        let estab_80 = "   1: 0100007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1";
        let v6_8080 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0";
        assert!(listens_on(listen_80, 80));
        assert!(!listens_on(listen_80, 81));
        assert!(!listens_on(estab_80, 80));
        assert!(listens_on(v6_8080, 8080));
        assert!(!listens_on("", 80));
    }

    #[test]
    fn loopback_exists_and_a_made_up_interface_does_not() {
        let lo = interface("lo").expect("every namespace has lo");
        assert!(lo.ifindex > 0 && lo.rx_queues >= 1);
        assert!(interface("sw-no-such-if").is_err());
    }
}
