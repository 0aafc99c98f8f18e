//! The driver's own statistics (`ethtool -S`), through the `SIOCETHTOOL`
//! ioctl (Linux `include/uapi/linux/ethtool.h`), which neither rustix nor
//! a well-kept blocking crate wraps: the driver's name, and the counters of
//! XDP_TX frames it failed to send, which say whether the program's
//! answers leave the interface. The ioctl works on whatever network
//! namespace the process is in, so a unit with `NetworkNamespacePath=`
//! reads the right interface (unlike /sys, which its mount namespace keeps).

use std::os::fd::{AsRawFd, OwnedFd};

/// `ETHTOOL_GDRVINFO`: driver name and the number of statistics.
const ETHTOOL_GDRVINFO: u32 = 0x03;
/// `ETHTOOL_GSTRINGS`: the names of a string set.
const ETHTOOL_GSTRINGS: u32 = 0x1b;
/// `ETHTOOL_GSTATS`: the statistics' values.
const ETHTOOL_GSTATS: u32 = 0x1d;
/// `ETH_SS_STATS`: the string set of the statistics' names.
const ETH_SS_STATS: u32 = 1;
/// `ETH_GSTRING_LEN`: each name's bytes, NUL padded.
const ETH_GSTRING_LEN: usize = 32;
/// `sizeof(struct ethtool_drvinfo)`: cmd, five 32-byte strings, 12
/// reserved bytes, five u32 (n_stats is the second of them).
const DRVINFO_LEN: usize = 4 + 5 * 32 + 12 + 5 * 4;
/// Where `n_stats` sits in `struct ethtool_drvinfo`.
const DRVINFO_N_STATS: usize = 4 + 5 * 32 + 12 + 4;
/// More statistics than any driver has; a bound on what we allocate.
const MAX_STATS: usize = 1 << 16;

/// An interface's driver statistics, as names and a way to read them.
#[derive(Debug)]
pub struct DriverStats {
    sock: OwnedFd,
    ifname: [u8; libc::IFNAMSIZ],
    /// The driver's name (`veth`, `virtio_net`, `mlx5_core`, ...).
    pub driver: String,
    /// Every statistic's name, in the driver's order.
    pub names: Vec<String>,
}

/// `struct ifreq` as `SIOCETHTOOL` reads it: the name and a pointer to the
/// command's buffer.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

impl DriverStats {
    /// Opens `ifname`'s statistics in this network namespace.
    pub fn open(ifname: &str) -> std::io::Result<DriverStats> {
        let (sock, name) = request_socket(ifname)?;
        let mut s = DriverStats {
            sock,
            ifname: name,
            driver: String::new(),
            names: Vec::new(),
        };
        let mut info = [0u8; DRVINFO_LEN];
        info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
        // SAFETY: `info` is a whole `struct ethtool_drvinfo`, ours for the
        // call.
        unsafe { s.ioctl(info.as_mut_ptr().cast()) }?;
        s.driver = c_string(&info[4..36]);
        let n = u32::from_ne_bytes(
            info[DRVINFO_N_STATS..DRVINFO_N_STATS + 4]
                .try_into()
                .unwrap_or_default(),
        );
        let n = n as usize;
        if n > MAX_STATS {
            return Err(std::io::Error::other(
                "the driver reports too many statistics",
            ));
        }
        let mut strings = Guarded::new(12 + n * ETH_GSTRING_LEN)?;
        let head = strings.bytes_mut();
        head[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        head[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        head[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
        // SAFETY: a `Guarded` buffer, alive through the call.
        unsafe { s.ioctl(strings.as_mut_ptr()) }?;
        s.names = strings.bytes_mut()[12..]
            .chunks_exact(ETH_GSTRING_LEN)
            .map(c_string)
            .collect();
        Ok(s)
    }

    /// Every statistic's value now, in [`DriverStats::names`]' order.
    pub fn read(&self) -> std::io::Result<Vec<u64>> {
        let n = self.names.len();
        // cmd and n_stats (two u32), then the values.
        let mut buf = Guarded::new(8 + 8 * n)?;
        let head = buf.bytes_mut();
        head[..4].copy_from_slice(&ETHTOOL_GSTATS.to_ne_bytes());
        head[4..8].copy_from_slice(&(n as u32).to_ne_bytes());
        // SAFETY: a `Guarded` buffer, alive through the call.
        unsafe { self.ioctl(buf.as_mut_ptr()) }?;
        let bytes = buf.bytes_mut();
        let got = u32::from_ne_bytes(bytes[4..8].try_into().unwrap_or_default());
        if got as usize != n {
            // The driver changed its set (a queue count changed): the
            // caller opens it again.
            return Err(std::io::Error::other("the driver's statistics changed"));
        }
        Ok(bytes[8..]
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// # Safety
    ///
    /// As [`ethtool`]'s.
    unsafe fn ioctl(&self, data: *mut libc::c_void) -> std::io::Result<()> {
        // SAFETY: passed on from this function's contract.
        unsafe { ethtool(&self.sock, self.ifname, data) }
    }
}

/// A socket to ask about `ifname` with, and the name as `struct ifreq`
/// holds it.
fn request_socket(ifname: &str) -> std::io::Result<(OwnedFd, [u8; libc::IFNAMSIZ])> {
    let mut name = [0u8; libc::IFNAMSIZ];
    if ifname.is_empty() || ifname.len() >= name.len() || ifname.contains('\0') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    Ok((sock, name))
}

/// `ETHTOOL_GCHANNELS`: the interface's queue (channel) counts.
const ETHTOOL_GCHANNELS: u32 = 0x3c;
/// `struct ethtool_channels`: cmd, then max_rx, max_tx, max_other,
/// max_combined, rx_count, tx_count, other_count, combined_count.
const CHANNELS_WORDS: usize = 9;

/// The receive queues `ifname` (in this network namespace) has in use: its
/// receive-only plus its combined channels, as `ethtool -l` shows them, so
/// every queue an AF_XDP socket may bind. `None` when the driver does not
/// report channels (it has one queue then, or the caller asks elsewhere).
pub fn rx_channels(ifname: &str) -> std::io::Result<Option<u32>> {
    let (sock, name) = request_socket(ifname)?;
    let mut words = [0u32; CHANNELS_WORDS];
    words[0] = ETHTOOL_GCHANNELS;
    // SAFETY: `words` is a whole `struct ethtool_channels`, ours for the
    // call; the kernel writes no more than its size.
    match unsafe { ethtool(&sock, name, words.as_mut_ptr().cast()) } {
        Ok(()) => Ok(Some(words[5].saturating_add(words[8]))),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One `SIOCETHTOOL` request for the interface `name` on `sock`.
///
/// # Safety
///
/// `data` must point at an ethtool command the kernel may read and write
/// for the call: a buffer of the command's full size, or one that ends at
/// a page with no access where the kernel may write more than was asked
/// (a `Guarded` buffer).
unsafe fn ethtool(
    sock: &OwnedFd,
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
) -> std::io::Result<()> {
    let mut req = IfReq {
        name,
        data,
        _pad: [0; 16],
    };
    // SAFETY: `req` is a live `struct ifreq` (name, then the data
    // pointer, padded to the kernel's size); `data` is as this function's
    // contract says; the socket is open for the call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL,
            std::ptr::from_mut(&mut req),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A buffer for an ioctl the kernel may write past: it ends where an
/// inaccessible page begins, so an overrun faults in the kernel's copy
/// (EFAULT) instead of writing over this process's memory.
struct Guarded {
    base: std::ptr::NonNull<libc::c_void>,
    map_len: usize,
    offset: usize,
    len: usize,
}

impl Guarded {
    fn new(len: usize) -> std::io::Result<Guarded> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let data = len.div_ceil(page).max(1) * page;
        let map_len = data + page;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to
        // it, and its result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(base).ok_or_else(std::io::Error::last_os_error)?;
        let g = Guarded {
            base,
            map_len,
            offset: data - len,
            len,
        };
        // SAFETY: the last page lies inside the mapping just made, which
        // `g` owns; nothing refers to that page.
        let rc = unsafe {
            libc::mprotect(
                base.as_ptr().cast::<u8>().add(data).cast(),
                page,
                libc::PROT_NONE,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(g)
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        // SAFETY: `offset` is within the mapping's readable part.
        unsafe { self.base.as_ptr().cast::<u8>().add(self.offset).cast() }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes from `offset` are inside the read-write part
        // of the mapping `self` owns (zeroed by mmap), borrowed mutably
        // through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Guarded::new` with this length
        // and nothing refers to it any more.
        let _ = unsafe { libc::munmap(self.base.as_ptr(), self.map_len) };
    }
}

/// The text before the first NUL.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Is this statistic a count of XDP_TX frames the driver failed to send?
/// veth: `rx_queue_N_xdp_tx_errors`; virtio_net: `rx_queue_N_xdp_tx_drops`;
/// mlx5: `rx_xdp_tx_err`, `rx_xdp_tx_full`; others name theirs alike.
pub fn is_xdp_tx_failure(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("xdp_tx") && ["err", "drop", "full"].iter().any(|w| n.contains(w))
}

/// Is this statistic of `driver` a count of XDP_TX frames it sent? veth:
/// `rx_queue_N_xdp_tx` (only what its peer took); mlx5: `rx_xdp_tx_xmit`.
/// Not virtio_net's `rx_queue_N_xdp_tx`, which counts the frames it tried.
pub fn is_xdp_tx_success(driver: &str, name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    (driver == "veth" && n.ends_with("xdp_tx")) || n.ends_with("xdp_tx_xmit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_xdp_tx_failure_counters_are_recognised() {
        for n in [
            "rx_queue_0_xdp_tx_errors",
            "rx_queue_3_xdp_tx_drops",
            "rx_xdp_tx_err",
            "rx_xdp_tx_full",
        ] {
            assert!(is_xdp_tx_failure(n), "{n}");
        }
        for n in [
            "rx_queue_0_xdp_tx",
            "rx_queue_0_xdp_packets",
            "tx_queue_0_xdp_xmit_errors",
            "peer_ifindex",
        ] {
            assert!(!is_xdp_tx_failure(n), "{n}");
        }
    }

    #[test]
    fn the_drivers_xdp_tx_success_counters_are_recognised() {
        for (d, n) in [
            ("veth", "rx_queue_0_xdp_tx"),
            ("mlx5_core", "rx_xdp_tx_xmit"),
        ] {
            assert!(is_xdp_tx_success(d, n) && !is_xdp_tx_failure(n), "{n}");
        }
        for (d, n) in [
            ("veth", "rx_queue_0_xdp_tx_errors"),
            ("mlx5_core", "rx_xdp_tx_full"),
            ("veth", "tx_queue_0_xdp_xmit"),
            ("virtio_net", "rx_queue_0_xdp_tx"),
        ] {
            assert!(!is_xdp_tx_success(d, n), "{d} {n}");
        }
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        assert!(DriverStats::open("sw-no-such-if0").is_err());
        assert!(DriverStats::open("a-name-longer-than-ifnamsiz").is_err());
    }
}
