/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The maps and settings of synwall.bpf.c, each with what it is for, and the
 * per-CPU counters every verdict increments. */
#ifndef SYNWALL_MAPS_H
#define SYNWALL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "synwall.h"
#include "cookie.h"

/* Settings a reload may change: one mmapped section (.data.live) that
 * synwall rewrites in place while the program runs. Each is read once per
 * packet, so a packet sees each value either old or new. */
#define LIVE SEC(".data.live")
/* What synwall's threads write on their own, apart from reloads: the
 * heartbeat and the attack state (.data.beat, also mmapped). */
#define BEAT SEC(".data.beat")

volatile __u8 match_addresses LIVE = 0; /* 1: only sw_addr entries are protected */
volatile __u16 mss_table[8] LIVE = { 536, 1220, 1300, 1360, 1400, 1440, 1460, 8960 };
volatile __u8 our_wscale LIVE = 7; /* our window scale in SYN-ACKs */

/* attach = "libxdp": the program stays in the dispatcher if synwall dies
 * without detaching it (the dispatcher's links are pinned, not ours), so
 * it fails open by itself: synwall writes bpf_ktime_get_ns() here every
 * 100 ms, and once it is HEARTBEAT_STALE_NS old every packet passes. */
const volatile __u8 require_heartbeat = 0;
/* [handoff] engine = "repair": verified ACKs go to the workers. */
const volatile __u8 handoff_repair = 0;
volatile __u64 heartbeat_ns BEAT = 0;
/* 2 s: twenty missed beats; long enough for a loaded box, short enough
 * that a dead synwall's port is the kernel's again within a blink. */
#define HEARTBEAT_STALE_NS 2000000000ULL

static __always_inline int heartbeat_stale(void)
{
	return require_heartbeat && bpf_ktime_get_ns() - heartbeat_ns > HEARTBEAT_STALE_NS;
}

/* The AF_XDP socket of each receive queue, by queue index; synwall puts
 * each worker's socket here. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Protected TCP ports: index = port in host order, value 1 = protected. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

/* Protected destination addresses, used when match_addresses is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sw_addr);
	__type(value, __u8);
} addresses SEC(".maps");

/* [attack] mode, and whether synwall's control loop sees an attack now
 * (auto): in peacetime (and always in "off") SYNs go to the kernel and
 * ACKs without our cookie pass, since they may carry the kernel's own. */
#define ATTACK_ALWAYS 0
#define ATTACK_AUTO 1
#define ATTACK_OFF 2
volatile __u8 attack_mode LIVE = ATTACK_ALWAYS;
volatile __u8 under_attack BEAT = 0;

/* Whether this program's answers (XDP_TX) leave the interface. synwall's
 * control loop watches the driver's XDP_TX error counters and clears it
 * when they fail (a veth whose peer has no XDP program of its own loses
 * every one). While clear, SYNs go to the workers and what
 * they cannot take goes to the kernel, except a probe every XDP_TX_PROBE_NS
 * per CPU, still answered by XDP_TX, so that synwall sees when answers
 * leave again. XDP_TX_LEAVING: they are known to leave (a NIC's wire in
 * native mode, generic XDP on a veth, a veth whose driver counted ours sent),
 * and synack = "auto" answers in XDP first: a SYN left to a worker that
 * keeps up costs its wake-up, several times an answer here. */
#define XDP_TX_OFF 0
#define XDP_TX_ON 1
#define XDP_TX_LEAVING 2
volatile __u8 xdp_tx_ok BEAT = XDP_TX_ON;
#define XDP_TX_PROBE_NS 20000000ULL /* 20 ms: 50 probes a second per CPU */

/* Queues from this one up receive but cannot send through AF_XDP (~0: no
 * such queue): those a driver added for XDP when the program attached
 * (virtio_net doubles its queue pairs, and the kernel sends nothing from
 * an AF_XDP socket on a queue beyond its real transmit queues). Their
 * sockets take the repair engine's ACKs, never a SYN: XDP answers it, or
 * with synack = "afxdp" the kernel does. */
volatile __u32 ack_only_from BEAT = ~0U;

/* When the kernel last got a SYN synwall could have answered
 * (bpf_ktime_get_coarse_ns; see kernel_cookie_ok in synwall.bpf.c): the
 * program writes it as it passes such SYNs, synwall at its start and
 * around a move of the link, when the kernel has every packet. */
volatile __u64 kernel_syn_ns BEAT = 0;

/* The secret key of the program's own hash tables (bpf/tuples.h, the
 * guard's windows), random per load, so that no one can aim at their
 * buckets. */
const volatile __u64 hash_seed = 0;

/* One step of those tables' hash: a 64-bit word mixed in. */
static __always_inline __u64 seeded_mix(__u64 h, __u64 w)
{
	h ^= w;
	h *= 0x9e3779b97f4a7c15ULL; /* 2^64 / the golden ratio */
	return h ^ (h >> 29);
}

/* When this CPU last sent a probe (xdp_tx_ok clear). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} probe_at SEC(".maps");
static __always_inline int peacetime(void)
{
	__u8 mode = attack_mode;

	return mode == ATTACK_OFF || (mode == ATTACK_AUTO && !under_attack);
}

/* Source prefixes ([protect] allow and deny) for traffic to protected
 * ports: an allowed source goes to the kernel untouched, a denied one is
 * dropped; allow is looked at first. A list that is empty is not looked
 * at (an LPM lookup costs tens of nanoseconds). */
volatile __u8 have_allow LIVE = 0;
volatile __u8 have_deny LIVE = 0;
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct sw_prefix);
	__type(value, __u8);
} allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct sw_prefix);
	__type(value, __u8);
} deny SEC(".maps");

/* The reflection guard ([reflection]): caps on SYN-ACKs per second towards
 * one source prefix (0: off) and in total per CPU (0: off); a reload
 * rewrites them. */
volatile __u32 reflect_prefix_cap LIVE = 0;
volatile __u32 reflect_total_cap LIVE = 0;
volatile __u8 reflect_v4_len LIVE = 24;
volatile __u8 reflect_v6_len LIVE = 48;

/*
 * Windows of SYN-ACKs (or SYNs) per prefix, for the reflection guard and
 * the per-source cap: a table of GUARD_SETS sets of GUARD_WAYS windows
 * (one cache line a set), a prefix's set and tag given by a hash of its
 * address keyed with hash_seed. A prefix that reaches min(cap, GUARD_HOLD)
 * in a second holds its window through that second and the next; a prefix
 * without a window takes one that nobody holds (the least counted), and
 * when every window of its set is held it goes uncounted this time (never
 * capped by another's count), counted as guard_uncounted. So a flood
 * spread over any number of prefixes costs the same per SYN, and a prefix
 * held to its cap stays held unless more than GUARD_WAYS busy prefixes
 * share its set (16,384 windows; the set is keyed with a secret, so its
 * members are left to chance).
 *
 * One table for all CPUs, its counts added atomically: a cap then holds
 * in all, however the receive queues spread a prefix's SYNs over the CPUs.
 * Tables per CPU were tried: without a look at the other CPUs' counts on
 * every SYN they either let a prefix through beyond its cap (its SYNs on
 * several CPUs: 2,096 SYN-ACKs where the cap allowed 2,009 in
 * tests/datapath_netns.rs) or refuse it before (its SYNs on one CPU), and
 * the atomic add measured no dearer than a plain one (synwall-xdp-cost).
 */
#define GUARD_SETS (1u << 12) /* 256 KiB: a flood from ever new prefixes
			       * meets fewer cache and TLB misses than in
			       * 1 MiB (synwall-xdp-cost) */
#define GUARD_WAYS 4
#define GUARD_HOLD 16

/* A window's start in units of 2^20 ns (1.05 ms; 32 bits wrap after 52
 * days), and the units in a second. */
#define GUARD_UNIT_SHIFT 20
#define GUARD_SECOND ((1000000000u >> GUARD_UNIT_SHIFT) + 1)
/* In a window's count: its prefix held the window in the second before. */
#define GUARD_HELD_BIT (1ULL << 62)
#define GUARD_COUNT_MASK (GUARD_HELD_BIT - 1)

struct sw_guard_window {
	__u32 tag; /* 0: free */
	__u32 start;
	__u64 count; /* this second's, and GUARD_HELD_BIT */
};

struct sw_guard_set {
	struct sw_guard_window way[GUARD_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_SETS);
	__type(key, __u32);
	__type(value, struct sw_guard_set);
} reflect_prefix SEC(".maps");

/* The per-source SYN limit ([attack] syns_per_source; 0: off) and its
 * windows per /32 or /64. */
volatile __u32 source_syn_cap LIVE = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_SETS);
	__type(key, __u32);
	__type(value, struct sw_guard_set);
} source_windows SEC(".maps");

/* The guard's window for the total, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sw_guard_window); /* its tag unused */
} reflect_total SEC(".maps");

/* Cookie keys by secret and epoch parity: keys[2s + (e & 1)] = K_s(e) for
 * the two accepted epochs (docs/cookie.md §2), s = 0 for the secret that
 * mints and s = 1 for the rollover's other secret. synwall rewrites them
 * as the schedule moves on. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct sw_key);
} keys SEC(".maps");

/* How many secrets' keys the keys map holds: 1, or 2 during a rollover. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} secret_count SEC(".maps");

/* Verdict and drop counters, per CPU (enum sw_counter). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SW_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Makes enum sw_counter part of the BTF so the skeleton exports it. */
enum sw_counter sw_counter_type_anchor SEC(".bss");

static __always_inline void count(enum sw_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

static __always_inline int verdict(enum sw_counter c, int action)
{
	count(c);
	return action;
}

#endif
