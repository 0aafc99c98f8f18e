// SPDX-License-Identifier: GPL-2.0
/* The bench kit's XDP programs for the testbed (synwall-testbed-xdp).
 *
 * On the server veth, the testbed's physical limits, measured with the same
 * generator as the systems compared:
 *   xdp_drop     every frame dropped: what XDP can take in at all;
 *   xdp_bounce   every frame sent back unmodified (XDP_TX);
 *   xdp_reflect  a SYN rewritten into a SYN-ACK without a cookie (MACs,
 *                addresses and ports swapped, SYN|ACK, ack = seq + 1,
 *                checksums updated) and sent back: the cheapest possible
 *                answer, against which synwall's XDP answer is measured;
 *   xdp_kernel_cookie  the peer's way: a SYN answered with the kernel's own
 *                SYN cookie (bpf_tcp_raw_gen_syncookie_ipv4/ipv6, as the
 *                kernel's XDP synproxy selftest and xdpcookie do): the TCP
 *                header grown to its longest so the helper may read any
 *                length, then cut to a SYN-ACK with the MSS option only
 *                (the kernel's cookie keeps nothing else without
 *                timestamps), checksums computed anew. IPv4 and IPv6, no
 *                VLAN tag, no IPv4 options or IPv6 extension headers.
 * Each counts the frames it sees and whether they arrived as the
 * generator's SYNs to `expect_port` at `expect_addr` (a receiver that
 * rewrites frames in place must not change what the generator sends).
 *
 * On the client veth:
 *   xdp_sink     TCP segments to any address but the client's own (answers
 *                to spoofed flood sources) are counted and dropped before
 *                the stack, as they would leave on a real wire; the rest
 *                (the real clients' traffic, ARP, neighbour discovery, a
 *                routing daemon's BGP sessions) passes. Having an XDP
 *                program also lets veth deliver the server's XDP_TX frames
 *                at all.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Set by user space before load. */
const volatile __be32 expect_addr = 0;	   /* server IPv4 (reflect/bounce/drop) */
const volatile __be16 expect_port = 0;	   /* server port */
const volatile __be32 keep_addr4 = 0;	   /* sink: the client's IPv4 */
/* sink: the client's IPv6, as two words in memory order (a const volatile
 * array copied with memcpy would be folded to its zero initialiser). */
const volatile __u64 keep_addr6_hi = 0;
const volatile __u64 keep_addr6_lo = 0;

enum tb_counter {
	TB_RX,		/* IPv4 TCP segments seen (the rest passes, uncounted) */
	TB_AS_SENT,	/* SYNs to expect_addr:expect_port, as the generator sends */
	TB_ALTERED,	/* other TCP: a rewritten frame, or not the generator's */
	TB_DROPPED,	/* sink: answers to spoofed sources dropped */
	TB_PASSED,	/* sink: the client's own traffic passed */
	TB_COUNTER_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TB_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);

	if (v)
		*v += 1;
}

/* One's complement sum folded to 16 bits (RFC 1071). */
static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The IPv4 TCP header of a frame without VLAN tags or IP options. */
static __always_inline struct tcphdr *tcp_v4(void *data, void *end, struct iphdr **ipp)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);

	if ((void *)(tcp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_TCP)
		return NULL;
	*ipp = ip;
	return tcp;
}

/* A limit program's verdict on one frame: `action` for the generator's
 * SYNs and any other TCP (counted apart), XDP_PASS for the rest (ARP,
 * neighbour discovery). *as_sent says whether it is the generator's SYN. */
static __always_inline int limit(struct xdp_md *ctx, int action, struct iphdr **ipp,
				 struct tcphdr **tcpp)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp = tcp_v4(data, end, ipp);

	*tcpp = NULL;
	if (!tcp)
		return XDP_PASS;
	count(TB_RX);
	if ((*ipp)->daddr == expect_addr && tcp->dest == expect_port && tcp->syn && !tcp->ack) {
		count(TB_AS_SENT);
		*tcpp = tcp;
	} else {
		count(TB_ALTERED);
	}
	return action;
}

/* Nothing at all: the bench's measure of what BPF_PROG_TEST_RUN's own
 * timing adds to one run. */
SEC("xdp")
int xdp_nothing(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	struct iphdr *ip;
	struct tcphdr *tcp;

	return limit(ctx, XDP_DROP, &ip, &tcp);
}

/* Every frame to the kernel: what any XDP program on the interface costs
 * the kernel's own path (on veth, the frame made into an XDP buffer and
 * back), with nothing done. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	struct iphdr *ip;
	struct tcphdr *tcp;

	return limit(ctx, XDP_PASS, &ip, &tcp);
}

SEC("xdp")
int xdp_bounce(struct xdp_md *ctx)
{
	struct iphdr *ip;
	struct tcphdr *tcp;

	return limit(ctx, XDP_TX, &ip, &tcp);
}

SEC("xdp")
int xdp_reflect(struct xdp_md *ctx)
{
	struct ethhdr *eth = (void *)(long)ctx->data;
	__be32 addr, old[3], new[3];
	__u8 mac[ETH_ALEN];
	struct tcphdr *tcp;
	struct iphdr *ip;
	__be16 port;
	int act = limit(ctx, XDP_DROP, &ip, &tcp);

	if (!tcp || (void *)(eth + 1) > (void *)(long)ctx->data_end)
		return act;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	/* Swapping addresses or ports leaves both checksums as they are. */
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	/* seq, ack and the offset/flags word change: update the checksum. */
	__builtin_memcpy(old, &tcp->seq, sizeof(old));
	tcp->ack_seq = bpf_htonl(bpf_ntohl(tcp->seq) + 1);
	tcp->seq = bpf_htonl(0x53570000);
	tcp->ack = 1;
	__builtin_memcpy(new, &tcp->seq, sizeof(new));
	tcp->check = ~fold((__u32)bpf_csum_diff(old, sizeof(old), new, sizeof(new),
						(__u16)~tcp->check));
	return XDP_TX;
}

#define TCP_MAXLEN 60

/* The SYN-ACK's TCP header after the SYN's in `tcp`: ports swapped, the
 * cookie as its sequence number, the MSS option only. */
static __always_inline void synack_tcp(struct tcphdr *tcp, __u32 cookie, __u16 mss)
{
	__be16 port = tcp->source;
	__u8 *opt = (__u8 *)(tcp + 1);

	tcp->source = tcp->dest;
	tcp->dest = port;
	tcp->ack_seq = bpf_htonl(bpf_ntohl(tcp->seq) + 1);
	tcp->seq = bpf_htonl(cookie);
	((__u8 *)tcp)[12] = (6 << 4); /* doff: 24 bytes */
	((__u8 *)tcp)[13] = 0x12;     /* SYN|ACK */
	tcp->window = bpf_htons(65535);
	tcp->urg_ptr = 0;
	tcp->check = 0;
	opt[0] = 2;
	opt[1] = 4;
	opt[2] = mss >> 8;
	opt[3] = mss & 0xff;
}

/* The SYN-ACK's TCP header from the helper's `value` (cookie, MSS), its
 * checksum over `addrs` (the sum of the swapped addresses) and the
 * pseudo-header's protocol and length, the frame cut to it: sent back. */
static __always_inline int synack_out(struct xdp_md *ctx, struct tcphdr *tcp, __s64 value,
				      __u32 addrs)
{
	__u64 sum = (__u64)addrs + bpf_htonl(IPPROTO_TCP) + bpf_htonl(24);

	synack_tcp(tcp, (__u32)value, (__u16)(value >> 32));
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = bpf_csum_diff(0, 0, (__be32 *)tcp, 24, (__u32)sum);
	tcp->check = ~fold((__u32)sum);
	if (bpf_xdp_adjust_tail(ctx, 24 - TCP_MAXLEN))
		return XDP_DROP;
	return XDP_TX;
}

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
}

static __always_inline int kernel_cookie_v4(struct xdp_md *ctx, __u32 tcp_len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);
	__be32 addr;
	__s64 value;

	if ((void *)tcp + TCP_MAXLEN > end)
		return XDP_DROP;
	value = bpf_tcp_raw_gen_syncookie_ipv4(ip, tcp, tcp_len);
	if (value < 0)
		return XDP_DROP;
	swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(sizeof(*ip) + 24);
	ip->ttl = 64;
	ip->check = 0;
	ip->check = ~fold((__u32)bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
	return synack_out(ctx, tcp, value, bpf_csum_diff(0, 0, &ip->saddr, 8, 0));
}

static __always_inline int kernel_cookie_v6(struct xdp_md *ctx, __u32 tcp_len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip6 + 1);
	struct in6_addr addr;
	__s64 value;

	if ((void *)tcp + TCP_MAXLEN > end)
		return XDP_DROP;
	value = bpf_tcp_raw_gen_syncookie_ipv6(ip6, tcp, tcp_len);
	if (value < 0)
		return XDP_DROP;
	swap_macs(eth);
	addr = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = addr;
	ip6->payload_len = bpf_htons(24);
	ip6->hop_limit = 64;
	return synack_out(ctx, tcp, value, bpf_csum_diff(0, 0, (__be32 *)&ip6->saddr, 32, 0));
}

SEC("xdp")
int xdp_kernel_cookie(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *tcp;
	__u32 l3, tcp_len;
	long tail;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
			return XDP_PASS;
		l3 = sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return XDP_PASS;
		l3 = sizeof(*ip6);
	} else {
		return XDP_PASS;
	}
	tcp = data + sizeof(*eth) + l3;
	if ((void *)(tcp + 1) > end)
		return XDP_PASS;
	if (!tcp->syn || tcp->ack || tcp->rst || tcp->fin)
		return XDP_PASS;
	count(TB_RX);
	tcp_len = tcp->doff * 4;
	tail = (long)end - (long)tcp;
	if (tcp_len < sizeof(*tcp) || tail < tcp_len || tail > 1500)
		return XDP_DROP;
	/* The helper reads tcp_len bytes, which the verifier must see in the
	 * packet whatever the length: the segment (any padding after it
	 * included) made as long as the longest header. */
	if (bpf_xdp_adjust_tail(ctx, TCP_MAXLEN - tail))
		return XDP_DROP;
	if (l3 == sizeof(struct iphdr))
		return kernel_cookie_v4(ctx, tcp_len);
	return kernel_cookie_v6(ctx, tcp_len);
}

/* A BGP session's segment (port 179, RFC 4271 §8.2.1), IPv4 without
 * options: the fleet test's routers and nodes keep theirs through the sink. */
static __always_inline int bgp(void *l4, void *end)
{
	struct tcphdr *tcp = l4;

	return (void *)(tcp + 1) <= end &&
	       (tcp->source == bpf_htons(179) || tcp->dest == bpf_htons(179));
}

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) <= end && ip->protocol == IPPROTO_TCP && ip->daddr != keep_addr4 &&
		    !bgp(ip + 1, end)) {
			count(TB_DROPPED);
			return XDP_DROP;
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		__u64 d[2];

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		__builtin_memcpy(d, &ip6->daddr, 16);
		if (ip6->nexthdr == IPPROTO_TCP && (d[0] != keep_addr6_hi || d[1] != keep_addr6_lo)) {
			count(TB_DROPPED);
			return XDP_DROP;
		}
	}
	count(TB_PASSED);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
