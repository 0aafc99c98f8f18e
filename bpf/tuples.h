/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Which connections the kernel may hold a socket for, so that a SYN that
 * cannot meet one skips the kernel's socket lookup, the dearest step of
 * the SYN path (about 130 ns of a SYN answered in XDP: the established
 * hash, then the listeners').
 *
 * A SYN must be the kernel's when its connection (4-tuple) has a kernel
 * socket other than the listener: a request socket (the kernel answered
 * its SYN before), a TIME-WAIT one (a client reusing its port: the kernel
 * may accept the SYN as a new connection), an established one. So every
 * such connection is marked here with the time, in a bucket of a hash
 * keyed with a secret seed (collisions, many or forced, only cost
 * lookups), and a SYN is looked up only when its connection was marked
 * within TUPLE_FRESH_UNITS (tuple_may_have_socket). Marks come from:
 *   - the XDP program, for every packet it lets through to the kernel or
 *     hands to a worker that makes it a socket (marked() in
 *     synwall.bpf.c), but a SYN in peacetime;
 *   - a sweep of the kernel's TCP sockets (sw_mark_sockets, a BPF
 *     iterator synwall runs after the attach, after a link move, a reload
 *     or the start of an attack, and every 30 s): sockets made before, or
 *     from SYNs passed in peacetime, and idle ones whose marks would
 *     otherwise go stale.
 * The marks hold only while the last sweep is recent: tuples_swept_ns is
 * when it began (synwall writes it after the sweep; 0 before the first,
 * and from just before each of those events until the sweep after it).
 * Otherwise, and wherever the iterator cannot load, every SYN is looked
 * up. Left out, each for at most the 30 s to the next sweep: a socket made
 * by packets that never crossed this program (another interface of a
 * multi-homed host; a program ahead of synwall in libxdp's dispatcher that
 * passes them itself), or by a peacetime IPv6 SYN whose header chain is
 * longer than the parser walks, meeting a later SYN of the same
 * connection here.
 */
#ifndef SYNWALL_TUPLES_H
#define SYNWALL_TUPLES_H

#include "maps.h"
#include "parse.h"

/* 256 KiB: a flood from ever new sources reads a bucket at random per
 * SYN, and 1 MiB cost a cache miss more each (synwall-xdp-cost). */
#define TUPLE_BUCKETS (1u << 17)
/* Marks are in units of 2^30 ns (1.07 s), 16 bits: they wrap after 19.5
 * hours, when an old mark may look recent again (a lookup, no more). */
#define TUPLE_UNIT_SHIFT 30
/* 112 units, 120 s: a TIME-WAIT socket lives 60 s (TCP_TIMEWAIT_LEN), a
 * request socket 63 s with the default tcp_synack_retries (5), both from
 * the last packet that passed; and twice the age a sweep may have (a
 * sweep marks every socket). */
#define TUPLE_FRESH_UNITS 112
/* The marks hold for TUPLE_SWEPT_VALID_NS after a sweep began; synwall
 * sweeps twice as often (src/xdp, TUPLE_SWEEP_EVERY). */
#define TUPLE_SWEPT_VALID_NS (60ULL * 1000000000ULL)

struct sw_tuple_marks {
	__u16 at[TUPLE_BUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sw_tuple_marks);
} kernel_tuples SEC(".maps");

/* bpf_ktime_get_coarse_ns() when the last sweep began (0: none). */
volatile __u64 tuples_swept_ns BEAT = 0;

/* The connection's hash, keyed with hash_seed (its 4-tuple, as parsed);
 * `flows` (synwall.bpf.c) keys on it too. */
static __always_inline __u64 tuple_hash(const struct pkt *p)
{
	__u64 h = hash_seed, w;

	if (p->v6) {
		const __u8 *a = (const __u8 *)p->tuple.ipv6.saddr;
		int i;

#pragma unroll
		for (i = 0; i < 4; i++) {
			__builtin_memcpy(&w, a + 8 * i, 8); /* saddr then daddr */
			h = seeded_mix(h, w);
		}
		return seeded_mix(h, (__u64)p->tuple.ipv6.sport << 16 | p->tuple.ipv6.dport);
	}
	h = seeded_mix(h, (__u64)p->tuple.ipv4.saddr << 32 | p->tuple.ipv4.daddr);
	return seeded_mix(h, (__u64)p->tuple.ipv4.sport << 16 | p->tuple.ipv4.dport);
}

/* An index (`mask`: a power of two less one) from a keyed hash's high
 * half, masked behind a barrier: Linux 6.1's verifier loses the bound when
 * the compiler folds the mask into the last mixing step. */
static __always_inline __u32 hash_index(__u64 h, __u32 mask)
{
	__u32 b = h >> 32;

	asm volatile("" : "+r"(b));
	return b & mask;
}

static __always_inline __u32 tuple_bucket(const struct pkt *p)
{
	return hash_index(tuple_hash(p), TUPLE_BUCKETS - 1);
}

/* Marks the connection whose tuple_hash is `h` at `ns` (CLOCK_MONOTONIC,
 * coarse or not). */
static __always_inline void mark_hashed_tuple(__u64 h, __u64 ns)
{
	__u32 zero = 0, b = hash_index(h, TUPLE_BUCKETS - 1);
	struct sw_tuple_marks *m = bpf_map_lookup_elem(&kernel_tuples, &zero);
	__u16 now = ns >> TUPLE_UNIT_SHIFT;

	if (m && m->at[b] != now) /* a line already up to date stays clean */
		m->at[b] = now;
}

/* Marks p's connection at `ns`. */
static __always_inline void mark_tuple(const struct pkt *p, __u64 ns)
{
	mark_hashed_tuple(tuple_hash(p), ns);
}

/* This packet reaches the kernel (or a worker that makes it a socket). */
static __always_inline void note_kernel_tuple(const struct pkt *p)
{
	mark_tuple(p, bpf_ktime_get_coarse_ns());
}

/* Whether this SYN's connection may have a kernel socket, at `now`
 * (bpf_ktime_get_coarse_ns). */
static __always_inline int tuple_may_have_socket(const struct pkt *p, __u64 now)
{
	__u64 swept = tuples_swept_ns;
	__u32 zero = 0;
	struct sw_tuple_marks *m;
	__u16 age;

	/* Unsigned: a sweep stamped a tick ahead of our clock counts as old. */
	if (!swept || now - swept >= TUPLE_SWEPT_VALID_NS)
		return 1;
	m = bpf_map_lookup_elem(&kernel_tuples, &zero);
	if (!m)
		return 1;
	age = (__u16)(now >> TUPLE_UNIT_SHIFT) - m->at[tuple_bucket(p)];
	/* A sweep marks on the precise clock, which may be a unit ahead. */
	return age < TUPLE_FRESH_UNITS || age == (__u16)-1;
}

/* CO-RE views of the kernel's own types: their fields' offsets come from
 * the running kernel's BTF when the program loads. */
struct sock_common___sw {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp___sw {
	void *meta;
	struct sock_common___sw *sk_common;
} __attribute__((preserve_access_index));

#define SW_AF_INET 2
#define SW_AF_INET6 10
#define SW_TCP_LISTEN 10

/* An IPv4 address mapped into IPv6 (RFC 4291 §2.5.5.2): a dual-stack
 * socket's IPv4 connection, which IPv4 packets reach. */
static __always_inline int v4_mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

/* The sweep: marks the connection of every TCP socket of this network
 * namespace on a protected port but the listeners (established, request
 * and TIME-WAIT sockets alike), as its packets would. */
SEC("iter/tcp")
int sw_mark_sockets(struct bpf_iter__tcp___sw *ctx)
{
	struct sock_common___sw *sk = ctx->sk_common;
	struct pkt p = {};
	struct in6_addr remote, local;

	if (!sk || sk->skc_state == SW_TCP_LISTEN)
		return 0;
	if (!is_protected_port(bpf_htons(sk->skc_num)))
		return 0;
	p.tuple.ipv4.saddr = sk->skc_daddr; /* the client's */
	p.tuple.ipv4.daddr = sk->skc_rcv_saddr;
	p.tuple.ipv4.sport = sk->skc_dport;
	p.tuple.ipv4.dport = bpf_htons(sk->skc_num);
	if (sk->skc_family == SW_AF_INET6) {
		remote = sk->skc_v6_daddr;
		local = sk->skc_v6_rcv_saddr;
		if (!v4_mapped(&remote)) {
			p.v6 = 1;
			__builtin_memcpy(p.tuple.ipv6.saddr, &remote, 16);
			__builtin_memcpy(p.tuple.ipv6.daddr, &local, 16);
			p.tuple.ipv6.sport = sk->skc_dport;
			p.tuple.ipv6.dport = bpf_htons(sk->skc_num);
		}
	} else if (sk->skc_family != SW_AF_INET) {
		return 0;
	}
	/* The coarse clock is not for tracing programs; the precise one
	 * runs on the same base. */
	mark_tuple(&p, bpf_ktime_get_ns());
	return 0;
}

#endif
