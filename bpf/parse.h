/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Parsing for synwall.bpf.c: Ethernet with up to two VLAN tags, IPv4 with
 * options or IPv6 with extension headers, TCP and its options. The same
 * limits as src/wire. */
#ifndef SYNWALL_PARSE_H
#define SYNWALL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

#define ETH_P_8021AD_ 0x88A8	  /* IEEE 802.1ad (QinQ) */
#define ETH_P_QINQ_LEGACY 0x9100 /* pre-standard QinQ */
#define VLAN_TAG_LEN 4
#define MAX_VLAN_TAGS 2		 /* as src/wire/ethernet.rs MAX_VLAN_TAGS */
#define MAX_IPV6_EXT 6		 /* as src/wire/ipv6.rs MAX_EXT_HEADERS */
#define MAX_IPV6_EXT_BYTES 1024	 /* as src/wire/ipv6.rs MAX_EXT_BYTES */
#define IP6_OFFSET 0xfff8	 /* RFC 8200 §4.5: fragment offset, in the upper 13 bits */
#define IP6_MF 0x0001		 /* RFC 8200 §4.5: more fragments */
#define IP_MF 0x2000		 /* RFC 791: more fragments */
#define IP_OFFSET 0x1fff	 /* RFC 791: fragment offset */

/* Header offsets as the parser bounds them, masked so the verifier sees
 * the bound after an offset went through a stack slot or a function call:
 * L3 after Ethernet + 2 tags (14 + 8), L4 after IPv6 + MAX_IPV6_EXT_BYTES of
 * extension headers (the masks are powers of two above both). */
#define L3_OFF_MASK 0x3f
#define L4_OFF_MASK 0x7ff

/* TCP options (RFC 9293 §3.2, RFC 7323 §3.2). */
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_TIMESTAMP 10
#define TCP_MAX_OPTIONS 40 /* a 60-byte header less its 20 fixed bytes */

/* Where the headers of a TCP segment to a protected port are. */
struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	__u32 v6;
	__u32 frag; /* a first fragment: the datagram goes on in others */
	struct bpf_sock_tuple tuple;
};

static __always_inline int is_vlan(__u16 proto_be)
{
	return proto_be == bpf_htons(ETH_P_8021Q) || proto_be == bpf_htons(ETH_P_8021AD_) ||
	       proto_be == bpf_htons(ETH_P_QINQ_LEGACY);
}

/* Is this TCP port protected? */
static __always_inline int is_protected_port(__be16 dport)
{
	__u32 port = bpf_ntohs(dport);
	__u8 *on = bpf_map_lookup_elem(&ports, &port);

	if (!on || !*on)
		return 0;
	return 1;
}

/* The source's verdict from the allow and deny lists: SW_PASS_ALLOWED,
 * SW_DROP_DENIED, or -1 (neither). */
static __always_inline int source_list(const struct pkt *p)
{
	struct sw_prefix key;

	if (!have_allow && !have_deny)
		return -1;
	__builtin_memset(&key, 0, sizeof(key));
	key.prefixlen = 8 + 128;
	if (p->v6) {
		key.data[0] = 6;
		__builtin_memcpy(&key.data[1], p->tuple.ipv6.saddr, 16);
	} else {
		key.prefixlen = 8 + 32;
		key.data[0] = 4;
		__builtin_memcpy(&key.data[1], &p->tuple.ipv4.saddr, 4);
	}
	if (have_allow && bpf_map_lookup_elem(&allow, &key))
		return SW_PASS_ALLOWED;
	if (have_deny && bpf_map_lookup_elem(&deny, &key))
		return SW_DROP_DENIED;
	return -1;
}

/* IPv6 extension headers we walk (RFC 8200 §4). */
static __always_inline int is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS;
}

/* IPv4: returns -1 with *tcp and p's addresses set, or why not ours. */
static __always_inline int parse_ipv4(void *l3, void *data_end, struct pkt *p, struct sw_addr *dst,
				      void **tcp)
{
	struct iphdr *ip = l3;
	__u32 ihl;

	if ((void *)(ip + 1) > data_end)
		return SW_PASS_TRUNCATED;
	if (ip->protocol != IPPROTO_TCP)
		return SW_PASS_NOT_TCP;
	p->tuple.ipv4.saddr = ip->saddr;
	p->tuple.ipv4.daddr = ip->daddr;
	p->v6 = 0;
	/* A later fragment has no TCP header; the first one decides (p has
	 * the addresses, for the lists). */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return SW_PASS_FRAGMENT;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return SW_PASS_TRUNCATED;
	if (ip->frag_off & bpf_htons(IP_MF)) {
		/* RFC 1858: a first fragment without the whole TCP header
		 * could have its flags filled in by the next one. */
		if (ihl + sizeof(struct tcphdr) > bpf_ntohs(ip->tot_len))
			return SW_DROP_FRAGMENT;
		p->frag = 1;
	}
	*tcp = l3 + ihl;
	dst->family = 4;
	__builtin_memcpy(dst->addr, &ip->daddr, 4);
	return -1;
}

/* An IPv6 Fragment header (RFC 8200 §4.5) in the walk: -1 to walk on past
 * it (an atomic fragment, RFC 6946, is a whole datagram; a first fragment
 * is marked), or SW_PASS_FRAGMENT for a later fragment. */
static __always_inline int ipv6_fragment(const __u8 *ext, struct pkt *p)
{
	__u16 off_m = (__u16)ext[2] << 8 | ext[3];

	if (off_m & IP6_OFFSET)
		return SW_PASS_FRAGMENT;
	if (off_m & IP6_MF)
		p->frag = 1;
	return -1;
}

/* IPv6 and its extension headers: as parse_ipv4. A chain longer than the
 * walk (MAX_IPV6_EXT headers, MAX_IPV6_EXT_BYTES) gives SW_DROP_LONG_CHAIN,
 * with the addresses set: the caller's policy decides. */
static __always_inline int parse_ipv6(void *l3, void *data_end, struct pkt *p, struct sw_addr *dst,
				      void **tcp)
{
	struct ipv6hdr *ip6 = l3;
	__u8 nexthdr;
	void *q;
	int i, rc;

	if ((void *)(ip6 + 1) > data_end)
		return SW_PASS_TRUNCATED;
	__builtin_memcpy(p->tuple.ipv6.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->tuple.ipv6.daddr, &ip6->daddr, 16);
	p->v6 = 1;
	dst->family = 6;
	__builtin_memcpy(dst->addr, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;
	q = ip6 + 1;
#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT; i++) {
		__u8 *ext = q;

		if (nexthdr == IPPROTO_FRAGMENT) {
			if ((void *)(ext + 4) > data_end)
				return SW_PASS_TRUNCATED;
			rc = ipv6_fragment(ext, p);
			if (rc >= 0)
				return rc;
			nexthdr = ext[0];
			q += 8;
			continue;
		}
		if (!is_ipv6_ext(nexthdr))
			break;
		if ((void *)(ext + 2) > data_end)
			return SW_PASS_TRUNCATED;
		nexthdr = ext[0];
		q += 8 + ext[1] * 8; /* RFC 8200 §4.3: length in 8-octet units, less the first */
	}
	if (is_ipv6_ext(nexthdr) || nexthdr == IPPROTO_FRAGMENT ||
	    q - (void *)(ip6 + 1) > MAX_IPV6_EXT_BYTES)
		return SW_DROP_LONG_CHAIN;
	if (nexthdr != IPPROTO_TCP)
		return SW_PASS_NOT_TCP;
	/* As for IPv4: a first fragment brings the whole TCP header. */
	if (p->frag && q - (void *)(ip6 + 1) + sizeof(struct tcphdr) > bpf_ntohs(ip6->payload_len))
		return SW_DROP_FRAGMENT;
	*tcp = q;
	return -1;
}

/*
 * Parses Ethernet, up to two VLAN tags, IPv4 (options) or IPv6 (extension
 * headers) and TCP. Returns -1 for a complete TCP header to a protected
 * port and address (p is filled), otherwise the counter that says why the
 * segment is not ours, or one of: SW_DROP_TRUNCATED_TCP (ours, but cut
 * short), SW_DROP_FRAGMENT (a first fragment without the whole TCP header),
 * SW_DROP_LONG_CHAIN (an IPv6 chain longer than the walk to a protected
 * address; p has the addresses), SW_PASS_FRAGMENT (a later fragment; p has
 * the addresses).
 */
static __always_inline int parse(void *data, void *data_end, struct pkt *p)
{
	struct sw_addr dst = {};
	struct ethhdr *eth = data;
	struct tcphdr *tcp = NULL;
	__u16 proto;
	void *l3;
	int i, rc;

	if ((void *)(eth + 1) > data_end)
		return SW_PASS_TRUNCATED;
	proto = eth->h_proto;
	l3 = eth + 1;
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan(proto))
			break;
		if (l3 + VLAN_TAG_LEN > data_end)
			return SW_PASS_TRUNCATED;
		proto = *(__u16 *)(l3 + 2);
		l3 += VLAN_TAG_LEN;
	}
	if (is_vlan(proto))
		return SW_PASS_DEEP;

	if (proto == bpf_htons(ETH_P_IP))
		rc = parse_ipv4(l3, data_end, p, &dst, (void **)&tcp);
	else if (proto == bpf_htons(ETH_P_IPV6))
		rc = parse_ipv6(l3, data_end, p, &dst, (void **)&tcp);
	else
		return SW_PASS_NOT_IP;
	if (rc == SW_DROP_LONG_CHAIN && match_addresses && !bpf_map_lookup_elem(&addresses, &dst))
		return SW_PASS_ADDR;
	if (rc >= 0)
		return rc;

	/* The ports first: whether this is ours at all. */
	if ((void *)tcp + 4 > data_end)
		return SW_PASS_TRUNCATED;
	if (!is_protected_port(tcp->dest))
		return SW_PASS_PORT;
	if (match_addresses && !bpf_map_lookup_elem(&addresses, &dst))
		return SW_PASS_ADDR;
	if ((void *)(tcp + 1) > data_end)
		return SW_DROP_TRUNCATED_TCP;
	if (p->v6) {
		p->tuple.ipv6.sport = tcp->source;
		p->tuple.ipv6.dport = tcp->dest;
	} else {
		p->tuple.ipv4.sport = tcp->source;
		p->tuple.ipv4.dport = tcp->dest;
	}
	p->l3_off = l3 - data;
	p->l4_off = (void *)tcp - data;
	return -1;
}

/* The cookie message's connection (docs/cookie.md §4) of a parsed segment,
 * client as source: addresses and ports from its tuple. */
static __always_inline void pkt_cookie_flow(const struct pkt *p, struct cookie_flow *fl)
{
	if (p->v6) {
		fl->saddr = (const __u8 *)p->tuple.ipv6.saddr;
		fl->daddr = (const __u8 *)p->tuple.ipv6.daddr;
		fl->addr_len = 16;
		fl->sport = p->tuple.ipv6.sport;
		fl->dport = p->tuple.ipv6.dport;
	} else {
		fl->saddr = (const __u8 *)&p->tuple.ipv4.saddr;
		fl->daddr = (const __u8 *)&p->tuple.ipv4.daddr;
		fl->addr_len = 4;
		fl->sport = p->tuple.ipv4.sport;
		fl->dport = p->tuple.ipv4.dport;
	}
}

/* The options walk: a bpf_loop callback over a stack copy of the option
 * bytes, so the verifier checks one step instead of every path through 40. */
#define OPT_BUF_LEN 64 /* a power of two above TCP_MAX_OPTIONS */
#define OPT_AT(w, i) ((w)->buf[(i) & (OPT_BUF_LEN - 1)])

/* The length of a read of n (1 to OPT_BUF_LEN) option bytes into a buffer
 * of OPT_BUF_LEN, in a form every verifier sees as 1 to OPT_BUF_LEN: Linux
 * 6.1's loses a length's lower bound when the value goes through the stack
 * and refuses a read that may be empty ("invalid zero-sized read"). It is n
 * itself; the empty asm keeps the compiler from folding the mask away. */
static __always_inline __u32 opt_read_len(__u32 n)
{
	asm volatile("" : "+r"(n));
	return ((n - 1) & (OPT_BUF_LEN - 1)) + 1;
}

struct opt_walk {
	__u8 buf[OPT_BUF_LEN]; /* options, zero padded; indexes are masked into range */
	__u32 len;	       /* option bytes present (0..40) */
	__u32 off;
	__u32 tsval;
	__u32 tsecr;
	int found; /* 1: timestamps found, -1: malformed */
};

/* A big-endian u32 of the options at `at` (any walk with a buf). */
#define OPT_BE32(w, at)                                                                            \
	((__u32)OPT_AT(w, at) << 24 | (__u32)OPT_AT(w, (at) + 1) << 16 |                           \
	 (__u32)OPT_AT(w, (at) + 2) << 8 | OPT_AT(w, (at) + 3))

static long opt_step(__u64 i, void *arg)
{
	struct opt_walk *w = arg;
	__u32 off = w->off, len;
	__u8 kind;

	if (w->off >= w->len)
		return 1;
	kind = OPT_AT(w, off);
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->off++;
		return 0;
	}
	len = OPT_AT(w, off + 1);
	if (len < 2 || w->off + len > w->len) {
		w->found = -1;
		return 1;
	}
	if (kind == TCPOPT_TIMESTAMP) {
		if (len != TCPOLEN_TIMESTAMP) {
			w->found = -1;
			return 1;
		}
		w->tsval = OPT_BE32(w, off + 2);
		w->tsecr = OPT_BE32(w, off + 6);
		w->found = 1;
		return 1;
	}
	w->off += len;
	return 0;
}

/* Walks the `len` option bytes now in w->buf for the timestamps option. */
static __always_inline void opt_walk_run(struct opt_walk *w, __u32 len)
{
	w->len = len;
	bpf_loop(TCP_MAX_OPTIONS, opt_step, w, 0);
}

#endif
