//! The XDP layer's own settings types: how the program is attached, who
//! answers SYNs, when SYNs are synwall's, and the capacity of its lists.
//! `[datapath]` and `[attack]` in the configuration take them as written.

use serde::Deserialize;

/// When SYNs are synwall's (`[attack] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackMode {
    /// Every SYN, always.
    #[default]
    Always,
    /// The kernel's in peacetime; synwall's while the SYN rate says attack.
    Auto,
    /// The kernel's: synwall only watches and counts.
    Off,
}

impl AttackMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackMode::Always => "always",
            AttackMode::Auto => "auto",
            AttackMode::Off => "off",
        }
    }
}

/// How XDP is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic if the driver lacks
    /// it, or (on veth) if native answers are seen not to leave.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// Who answers SYNs with SYN-ACKs (`[datapath] synack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynackMode {
    /// The XDP program first where its answers are known to leave the
    /// interface (the answer watch's `leaving`); elsewhere the AF_XDP
    /// workers while they keep up, and the XDP program answers the SYNs a
    /// worker's ring has no room for.
    #[default]
    Auto,
    /// The AF_XDP workers answer every SYN.
    Afxdp,
    /// The XDP program answers every SYN it can (XDP_TX); the workers get
    /// the rest.
    Xdp,
}

impl SynackMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SynackMode::Auto => "auto",
            SynackMode::Afxdp => "afxdp",
            SynackMode::Xdp => "xdp",
        }
    }
}

/// Most protected addresses. synwall sizes the XDP program's map from it
/// (twice: a reload briefly holds the old list and the new one), so a list
/// the checks accept always fits, and a longer one is refused here, by
/// `check-config` and by a reload, rather than half-applied.
pub const MAX_ADDRESSES: usize = 1024;
/// Most prefixes in each of `allow` and `deny` (the same, for their maps).
pub const MAX_LIST_PREFIXES: usize = 16_384;
