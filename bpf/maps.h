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

volatile __u8 match_addresses LIVE = 0; /* 1: only sw_addr entries are protected */
volatile __u16 mss_table[8] LIVE = { 536, 1220, 1300, 1360, 1400, 1440, 1460, 8960 };
volatile __u8 our_wscale LIVE = 7; /* our window scale in SYN-ACKs */

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

/* Cookie keys by epoch parity: keys[e & 1] = K(e) for the current and the
 * previous epoch, rewritten by synwall when the epoch changes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct sw_key);
} keys SEC(".maps");

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
