// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * synwall XDP program: steer SYNs to protected ports into this receive
 * queue's AF_XDP socket, pass everything else to the kernel.
 *
 *   frame -> Ethernet (+ up to 2 VLAN tags) -> IPv4 (options) / IPv6 (ext
 *   headers walked) -> TCP -> protected port? -> kernel socket? -> SYN?
 *
 * Nothing here is dropped for being a fragment or lacking DF. Every verdict
 * increments its own per-CPU counter (enum sw_counter in synwall.h).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "synwall.h"
#include "cookie.h"

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ_LEGACY 0x9100
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 6 /* as src/wire/ipv6.rs MAX_EXT_HEADERS */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Settings written by synwall before load (read-only at run time). */
const volatile __u8 match_addresses = 0; /* 1: only sw_addr entries are protected */

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

static __always_inline int is_vlan(__u16 proto_be)
{
	return proto_be == bpf_htons(ETH_P_8021Q) || proto_be == bpf_htons(ETH_P_8021AD_) ||
	       proto_be == bpf_htons(ETH_P_QINQ_LEGACY);
}

/* The options walk: a bpf_loop callback over a stack copy of the option
 * bytes, so the verifier checks one step instead of every path through 40. */
struct opt_walk {
	__u8 buf[64];	/* options, zero padded; indexes are masked into range */
	__u32 len;	/* option bytes present (0..40) */
	__u32 off;
	__u32 tsecr;
	int found;	/* 1: timestamps found, -1: malformed */
};

static long opt_step(__u64 i, void *arg)
{
	struct opt_walk *w = arg;
	__u32 off = w->off & 63, len;
	__u8 kind;

	if (w->off >= w->len)
		return 1;
	kind = w->buf[off];
	if (kind == 0)
		return 1;
	if (kind == 1) {
		w->off++;
		return 0;
	}
	len = w->buf[(off + 1) & 63];
	if (len < 2 || w->off + len > w->len) {
		w->found = -1;
		return 1;
	}
	if (kind == 8) {
		if (len != 10) {
			w->found = -1;
			return 1;
		}
		w->tsecr = (__u32)w->buf[(off + 6) & 63] << 24 | (__u32)w->buf[(off + 7) & 63] << 16 |
			   (__u32)w->buf[(off + 8) & 63] << 8 | w->buf[(off + 9) & 63];
		w->found = 1;
		return 1;
	}
	w->off += len;
	return 0;
}

/* The ACK's timestamps option: 1 found (TSecr in *tsecr), 0 none, -1 malformed. */
static __always_inline int find_tsecr(struct xdp_md *ctx, struct tcphdr *tcp, __u32 tcp_off, __u32 *tsecr)
{
	struct opt_walk w = {};
	__u32 opt_len = tcp->doff * 4;

	if (opt_len < sizeof(*tcp))
		return -1;
	opt_len -= sizeof(*tcp);
	if (opt_len == 0)
		return 0;
	if (opt_len > 40)
		return -1;
	if (bpf_xdp_load_bytes(ctx, tcp_off + sizeof(*tcp), w.buf, opt_len))
		return -1;
	w.len = opt_len;
	bpf_loop(40, opt_step, &w, 0);
	*tsecr = w.tsecr;
	return w.found;
}

/*
 * An ACK to a protected port with no kernel socket: it completes one of our
 * handshakes or it is dropped here, before user space or the TCP stack.
 *
 * A global function, so the verifier checks it once on its own instead of
 * once for every parse path that reaches it. It gets the context and the
 * offsets of the IP and TCP headers and re-derives its pointers.
 */
__attribute__((noinline)) int sw_check_ack(struct xdp_md *ctx, __u32 l3_off, __u32 l4_off, __u32 v6)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp;
	struct sw_key *key;
	__u32 cookie, client_isn, slot, tsecr = 0;
	int ts, ok;

	/* Offsets are bounded by the parser: L2 + 2 tags, IPv6 + 6 ext headers. */
	l3_off &= 0x3f;
	l4_off &= 0x7ff;
	tcp = data + l4_off;
	if ((void *)(tcp + 1) > data_end)
		return verdict(SW_DROP_TRUNC_TCP, XDP_DROP);
	cookie = bpf_ntohl(tcp->ack_seq) - 1;
	client_isn = bpf_ntohl(tcp->seq) - 1;
	slot = (cookie >> 9) & 1;
	ts = find_tsecr(ctx, tcp, l4_off, &tsecr);
	if (ts < 0)
		return verdict(SW_DROP_BAD_OPTIONS, XDP_DROP);
	key = bpf_map_lookup_elem(&keys, &slot);
	if (!key)
		return verdict(SW_DROP_BAD_COOKIE, XDP_DROP);
	if (v6) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return verdict(SW_DROP_TRUNC_TCP, XDP_DROP);
		ok = cookie_check(key, (__u8 *)&ip6->saddr, (__u8 *)&ip6->daddr, 16, tcp->source,
				  tcp->dest, client_isn, cookie, ts, tsecr);
	} else {
		struct iphdr *ip = data + l3_off;

		if ((void *)(ip + 1) > data_end)
			return verdict(SW_DROP_TRUNC_TCP, XDP_DROP);
		ok = cookie_check(key, (__u8 *)&ip->saddr, (__u8 *)&ip->daddr, 4, tcp->source, tcp->dest,
				  client_isn, cookie, ts, tsecr);
	}
	if (!ok)
		return verdict(SW_DROP_BAD_COOKIE, XDP_DROP);
	return verdict(SW_ACK_COOKIE_OK, XDP_PASS);
}

SEC("xdp")
int xdp_synwall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_sock_tuple tuple = {};
	struct sw_addr dst = {};
	struct ethhdr *eth = data;
	struct tcphdr *tcp;
	__u32 tuple_len;
	__u16 proto;
	void *l3;
	int i;

	count(SW_RX);
	if ((void *)(eth + 1) > data_end)
		return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
	proto = eth->h_proto;
	l3 = eth + 1;
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan(proto))
			break;
		if (l3 + 4 > data_end)
			return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
		proto = *(__u16 *)(l3 + 2);
		l3 += 4;
	}
	if (is_vlan(proto))
		return verdict(SW_PASS_DEEP, XDP_PASS);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
		if (ip->protocol != IPPROTO_TCP)
			return verdict(SW_PASS_NOT_TCP, XDP_PASS);
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return verdict(SW_PASS_FRAGMENT, XDP_PASS);
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
		tcp = l3 + ihl;
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple_len = sizeof(tuple.ipv4);
		dst.family = 4;
		__builtin_memcpy(dst.addr, &ip->daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		__u8 nexthdr;
		void *p;

		if ((void *)(ip6 + 1) > data_end)
			return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
		nexthdr = ip6->nexthdr;
		p = ip6 + 1;
#pragma unroll
		for (i = 0; i < MAX_IPV6_EXT; i++) {
			__u8 *ext = p;

			if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
			    nexthdr != IPPROTO_DSTOPTS)
				break;
			if ((void *)(ext + 2) > data_end)
				return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
			nexthdr = ext[0];
			p += 8 + ext[1] * 8;
		}
		if (nexthdr == IPPROTO_FRAGMENT)
			return verdict(SW_PASS_FRAGMENT, XDP_PASS);
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS)
			return verdict(SW_PASS_DEEP, XDP_PASS);
		if (nexthdr != IPPROTO_TCP)
			return verdict(SW_PASS_NOT_TCP, XDP_PASS);
		tcp = p;
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
		tuple_len = sizeof(tuple.ipv6);
		dst.family = 6;
		__builtin_memcpy(dst.addr, &ip6->daddr, 16);
	} else {
		return verdict(SW_PASS_NOT_IP, XDP_PASS);
	}

	/* The ports first: whether this is ours at all. */
	if ((void *)tcp + 4 > data_end)
		return verdict(SW_PASS_TRUNC_L2L3, XDP_PASS);
	{
		__u32 port = bpf_ntohs(tcp->dest);
		__u8 *on = bpf_map_lookup_elem(&ports, &port);

		if (!on || !*on)
			return verdict(SW_PASS_PORT, XDP_PASS);
	}
	if (match_addresses && !bpf_map_lookup_elem(&addresses, &dst))
		return verdict(SW_PASS_ADDR, XDP_PASS);
	if ((void *)(tcp + 1) > data_end)
		return verdict(SW_DROP_TRUNC_TCP, XDP_DROP);

	/* A segment of an existing kernel socket (established, time-wait or
	 * request) is the kernel's; only a listener (or nothing) is ours. */
	if (tuple_len == sizeof(tuple.ipv4)) {
		tuple.ipv4.sport = tcp->source;
		tuple.ipv4.dport = tcp->dest;
	} else {
		tuple.ipv6.sport = tcp->source;
		tuple.ipv6.dport = tcp->dest;
	}
	{
		struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);

		if (sk) {
			int listener = sk->state == BPF_TCP_LISTEN;

			bpf_sk_release(sk);
			if (!listener)
				return verdict(SW_PASS_SOCKET, XDP_PASS);
		}
	}

	if (tcp->rst)
		return verdict(SW_PASS_RST, XDP_PASS);
	if (!tcp->syn) {
		if (!tcp->ack)
			return verdict(SW_DROP_BAD_FLAGS, XDP_DROP);
		return sw_check_ack(ctx, l3 - data, (void *)tcp - data, tuple_len != sizeof(tuple.ipv4));
	}
	if (tcp->ack) /* a SYN-ACK to a server port: reflection, as the core drops it */
		return verdict(SW_DROP_BAD_FLAGS, XDP_DROP);

	/* Falls back to XDP_PASS when this queue has no socket. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return verdict(SW_SYN_REDIRECT, XDP_REDIRECT);
	return verdict(SW_SYN_NO_XSK, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
