/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Types shared by the BPF programs and synwall (which reads them from the
 * generated skeleton's `types` module, never by hand). */
#ifndef SYNWALL_H
#define SYNWALL_H

/* Per-CPU counters of the XDP program, one slot each: every verdict and
 * every drop has its own. src/xdp/mod.rs names each one (lower case,
 * without SW_) and fails to build when they drift apart. */
enum sw_counter {
	SW_RX = 0,		/* frames seen */
	SW_PASS_NOT_IP,		/* not IPv4/IPv6 (ARP, LLDP, ...) */
	SW_PASS_NOT_TCP,	/* IP, but not TCP */
	SW_PASS_FRAGMENT,	/* a later fragment, or a first one that is no SYN */
	SW_PASS_PORT,		/* TCP to a port we do not protect */
	SW_PASS_ADDR,		/* protected port, unprotected destination */
	SW_PASS_SOCKET,		/* belongs to an established kernel socket */
	SW_PASS_RST,		/* RST with no socket: the kernel ignores it */
	SW_PASS_DEEP,		/* three VLAN tags */
	SW_PASS_TRUNCATED,	/* cut short before we know it is ours */
	SW_DROP_TRUNCATED_TCP,	/* TCP header to a protected port cut short */
	SW_SYN_REDIRECT,	/* SYN sent to this queue's AF_XDP socket */
	SW_SYN_NO_XSK,		/* SYN, but no socket on this queue: passed */
	SW_SYNACK_XDP,		/* SYN answered by this program (XDP_TX) */
	SW_SYN_BACKLOG,		/* synack = "auto": the worker was backed up, XDP took the SYN */
	SW_SYN_WORKER_IP_EXT,	/* to the worker: IPv4 options or IPv6 extension headers */
	SW_SYN_WORKER_PAYLOAD,	/* to the worker: the SYN carries data */
	SW_SYN_WORKER_OPTIONS,	/* to the worker: TCP options the core rejects */
	SW_SYN_WORKER_CHECKSUM,	/* to the worker: a bad IPv4 or TCP checksum */
	SW_SYN_WORKER_SOURCE,	/* to the worker: a source the core refuses */
	SW_SYN_WORKER_FLAGS,	/* to the worker: SYN with FIN */
	SW_SYN_WORKER_SHAPE,	/* to the worker: truncated, or a bad IP version */
	SW_SYN_WORKER_NO_ROOM,	/* to the worker: the frame cannot grow to the SYN-ACK */
	SW_ACK_COOKIE_OK,	/* ACK with a valid cookie: passed for the hand-off */
	SW_DROP_BAD_COOKIE,	/* ACK whose cookie does not validate */
	SW_DROP_BAD_OPTIONS,	/* ACK with malformed TCP options */
	SW_DROP_BAD_FLAGS,	/* neither SYN, ACK nor RST (NULL, FIN-only scans) */
	SW_HANDOFF_OK,		/* TC: connection handed to the local listener */
	SW_HANDOFF_FAILED,	/* TC: the kernel refused the hand-off (passed as is) */
	SW_HANDOFF_NOT_OURS,	/* TC: an ACK without our cookie (the kernel's own, perhaps): passed */
	SW_PASS_FOLLOW_UP,	/* a segment right behind a verified ACK: passed to TC */
	SW_HANDOFF_DEFERRED,	/* TC: requeued behind its connection's hand-off */
	SW_HANDOFF_FOLLOW_UP_DROP, /* TC: follow-up whose hand-off did not complete */
	SW_PASS_STALE,		/* attach = "libxdp": synwall's heartbeat stopped, all passed */
	SW_PASS_ALLOWED,	/* source in [protect] allow: to the kernel untouched */
	SW_DROP_DENIED,		/* source in [protect] deny */
	SW_DROP_REFLECTION_CAP,	/* SYN whose SYN-ACK would pass a [reflection] cap */
	SW_PASS_PEACE,		/* [attack] auto in peacetime, or off: SYN to the kernel */
	SW_PASS_PEACE_ACK,	/* the same: an ACK without our cookie (maybe the kernel's) */
	SW_DROP_SOURCE_CAP,	/* under attack: a source past [attack] syns_per_source */
	SW_SYN_KERNEL,		/* XDP answers do not leave the interface and the worker is
				 * backed up: the SYN goes to the kernel */
	SW_PASS_KERNEL_ACK,	/* an ACK without our cookie but with a valid SYN cookie
				 * of the kernel's (it answered SYNs lately): passed */
	SW_DROP_FRAGMENT,	/* a first fragment without the whole TCP header, or
				 * under attack a SYN in fragments */
	SW_PASS_FRAGMENT_SYN,	/* in peacetime, a SYN in fragments: to the kernel */
	SW_DROP_LONG_CHAIN,	/* under attack, an IPv6 chain longer than the walk */
	SW_PASS_LONG_CHAIN,	/* in peacetime, the same: to the kernel */
	SW_GUARD_UNCOUNTED,	/* a SYN no cap could count: its prefix's set of windows
				 * was full of busier prefixes (not a verdict) */
	SW_FLOW_EVICTED,	/* a verified ACK's connection took the `flows` slot of
				 * one verified within the second (not a verdict) */
	SW_COUNTER_MAX,
};

/* A protected destination address (IPv4 in the first 4 bytes). */
struct sw_addr {
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
	__u8 addr[16];
};

/* A source prefix of the allow and deny lists (LPM trie key): the family
 * byte (4 or 6) then the address, so one trie holds both families;
 * prefixlen counts the family byte's 8 bits too. */
struct sw_prefix {
	__u32 prefixlen;
	__u8 data[17];
};

#endif
