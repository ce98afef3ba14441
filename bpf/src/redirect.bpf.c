// SPDX-License-Identifier: GPL-2.0
/*
 * Outbound interception without iptables: a meshed workload's TCP connect() is rewritten to the
 * sidecar's outbound listener, and the sidecar learns where the connection was going with the
 * same getsockopt(SO_ORIGINAL_DST) it uses under iptables REDIRECT; DNS over UDP goes to the
 * sidecar's resolver and its answers look as if they came from the server the app asked.
 *
 *   connect4/6   rewrite the destination to 127.0.0.1 (::1) : outbound port (TCP port 53 and
 *                connected UDP port 53: the DNS port), remembering the original destination by
 *                socket cookie;
 *   sendmsg4/6   the same for an unconnected UDP socket's datagram to port 53;
 *   recvmsg4/6   shows the replies from the resolver as coming from that original server;
 *   sockops      once the connection is established, re-keys that memory by the connection's
 *                4-tuple, which is all the sidecar's accepted socket shares with the app's;
 *   getsockopt   answers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on the sidecar's socket from it;
 *   getpeername  shows the app the address it dialled, not the sidecar's.
 *
 * Which sockets are touched follows cni/rules.ts (the iptables rules), per network namespace:
 * settings live in maps keyed by the namespace's cookie, and a namespace with no settings is
 * left alone. The map layouts below are written by bpf/maps.ts; change both together.
 *
 * GPL because bpf_get_netns_cookie and the sockops helpers are GPL-only.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOL_IP 0
#define SOL_IPV6 41
/* SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST have the same number. */
#define ORIGINAL_DST_OPTNAME 80

/*
 * Context fields that are arrays of u32 (user_ip6, local_ip6, ...) may only be read and written a
 * word at a time, but clang merges two neighbouring u32 accesses into one u64, which the verifier
 * rejects ("invalid bpf_context access off=48 size=8"). A volatile access is never merged.
 */
#define CTX_WORD(field) (*(volatile __u32 *)&(field))

/* flb_settings.flags */
#define FLB_INCLUDE_ONLY 1 /* includeOutboundIpRanges is not empty: only those ranges are captured */
#define FLB_CAPTURE_DNS 2  /* TCP port 53 goes to dns_port */
#define FLB_NO_IPV6 4      /* ipv6: disabled, native IPv6 destinations are left alone */

struct flb_settings {
	__u32 proxy_uid;
	__u32 proxy_gid; /* 0: none */
	__u16 outbound_port;
	__u16 dns_port;
	__u32 flags;
};

struct flb_port_key {
	__u64 netns_cookie;
	__u16 port;
	__u16 pad16;
	__u32 pad32;
};

/*
 * An LPM trie matches on the bytes after prefixlen: the namespace cookie's 8 bytes (always the
 * whole of them: prefixlen counts them) and then the address, IPv4 as ::ffff:a.b.c.d so one trie
 * holds both families. Two u32 halves, not a u64, so the compiler puts no padding before them.
 */
struct flb_cidr_key {
	__u32 prefixlen;
	__u32 netns_cookie_lo;
	__u32 netns_cookie_hi;
	__u8 address[16];
};

struct flb_original {
	__u8 address[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u16 port;       /* host order */
	__u8 is_ipv4;
	__u8 pad8;
	__u32 pad32;
};

/* The established connection as the app's socket sees it: app address and port, proxy address and port. */
struct flb_tuple_key {
	__u64 netns_cookie;
	__u8 app_address[16];
	__u8 proxy_address[16];
	__u16 app_port; /* host order */
	__u16 proxy_port;
	__u32 pad32;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* written by the loader only: no memory until used */
	__type(key, __u64);
	__type(value, struct flb_settings);
} flb_settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flb_port_key);
	__type(value, __u8);
} flb_excl_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flb_cidr_key);
	__type(value, __u8);
} flb_excl_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flb_cidr_key);
	__type(value, __u8);
} flb_incl_cidrs SEC(".maps");

/*
 * LRU: a socket that dies before sockops sees it close (or whose close we never see) ages out.
 * LRU maps are allocated whole (about 6 MiB here); past 65536 open redirected connections on a
 * node the oldest lose only what getpeername shows.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct flb_original);
} flb_orig_cookie SEC(".maps");

/*
 * The DNS server a UDP socket last sent to, by socket cookie, for its replies. Apart from the TCP
 * map because UDP sockets are not seen closing: their entries only age out, and every lookup
 * makes one, which must not push out a long-lived TCP connection's entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct flb_original);
} flb_dns_cookie SEC(".maps");

/* Needed only from the handshake to the sidecar's getsockopt (milliseconds): left to the LRU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flb_tuple_key);
	__type(value, struct flb_original);
} flb_orig_tuple SEC(".maps");

static __always_inline void map_ipv4(__u8 out[16], __u32 ip4 /* network order */)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], &ip4, 4);
}

static __always_inline int is_v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int is_ipv4_loopback(__u32 ip4)
{
	return (bpf_ntohl(ip4) >> 24) == 127;
}

static __always_inline int in_cidrs(void *trie, __u64 netns_cookie, const __u8 address[16])
{
	struct flb_cidr_key key = {
		.prefixlen = 64 + 128,
		.netns_cookie_lo = (__u32)netns_cookie,
		.netns_cookie_hi = (__u32)(netns_cookie >> 32),
	};
	__builtin_memcpy(key.address, address, 16);
	return bpf_map_lookup_elem(trie, &key) != 0;
}

static __always_inline int is_proxy(const struct flb_settings *settings)
{
	__u64 uid_gid = bpf_get_current_uid_gid();
	return (__u32)uid_gid == settings->proxy_uid || (settings->proxy_gid != 0 && (__u32)(uid_gid >> 32) == settings->proxy_gid);
}

/*
 * Where a connection or datagram goes: 0 to leave it alone, else the local port to send it to.
 * The order of the iptables rules: the proxy's own sockets; native IPv6 when IPv6 is off (there
 * are no ip6tables rules then); DNS (FLB_DNS comes before every exception, so a local stub
 * resolver's queries go to the sidecar too); then, for TCP only, loopback, excluded ports and
 * ranges (the pod's own addresses among them), and with an inclusion list only those ranges.
 */
static __always_inline __u16 redirect_port(const __u8 address[16], __u16 port, int is_ipv4, int is_loopback, int udp,
					   __u64 netns_cookie, const struct flb_settings *settings)
{
	if (is_proxy(settings))
		return 0;
	if (!is_ipv4 && (settings->flags & FLB_NO_IPV6))
		return 0;
	if (port == 53 && (settings->flags & FLB_CAPTURE_DNS))
		return settings->dns_port;
	if (udp || is_loopback)
		return 0;

	struct flb_port_key port_key = { .netns_cookie = netns_cookie, .port = port };
	if (bpf_map_lookup_elem(&flb_excl_ports, &port_key))
		return 0;
	if (in_cidrs(&flb_excl_cidrs, netns_cookie, address))
		return 0;
	if ((settings->flags & FLB_INCLUDE_ONLY) && !in_cidrs(&flb_incl_cidrs, netns_cookie, address))
		return 0;
	return settings->outbound_port;
}

/*
 * The TCP connect, UDP connect and UDP sendmsg of a registered namespace, by the rules above. The destination becomes 127.0.0.1
 * (::1; ::ffff:127.0.0.1 when a dual-stack socket dials IPv4, as REDIRECT would) at the chosen
 * port, and the original is remembered by socket cookie.
 */
static __always_inline int redirect(struct bpf_sock_addr *ctx, int ipv6_hook)
{
	int udp = ctx->type == SOCK_DGRAM;
	if (ctx->type != SOCK_STREAM && !udp)
		return 1;
	__u64 netns_cookie = bpf_get_netns_cookie(ctx);
	const struct flb_settings *settings = bpf_map_lookup_elem(&flb_settings, &netns_cookie);
	if (!settings)
		return 1;

	__u8 address[16];
	int is_ipv4, is_loopback;
	if (ipv6_hook) {
		/* The verifier allows the context's address only as u32 loads, one word at a time. */
		__u32 ip6[4] = { CTX_WORD(ctx->user_ip6[0]), CTX_WORD(ctx->user_ip6[1]), CTX_WORD(ctx->user_ip6[2]), CTX_WORD(ctx->user_ip6[3]) };
		is_ipv4 = is_v4_mapped(ip6);
		is_loopback = is_ipv4 ? is_ipv4_loopback(ip6[3]) : (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == bpf_htonl(1));
		__builtin_memcpy(address, ip6, 16);
	} else {
		__u32 ip4 = ctx->user_ip4;
		is_loopback = is_ipv4_loopback(ip4);
		is_ipv4 = 1;
		map_ipv4(address, ip4);
	}
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	__u16 to_port = redirect_port(address, port, is_ipv4, is_loopback, udp, netns_cookie, settings);
	if (!to_port)
		return 1;

	struct flb_original original = { .port = port, .is_ipv4 = is_ipv4 };
	__builtin_memcpy(original.address, address, 16);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(udp ? (void *)&flb_dns_cookie : (void *)&flb_orig_cookie, &cookie, &original, BPF_ANY);

	if (ipv6_hook) {
		CTX_WORD(ctx->user_ip6[0]) = 0;
		CTX_WORD(ctx->user_ip6[1]) = 0;
		CTX_WORD(ctx->user_ip6[2]) = is_ipv4 ? bpf_htonl(0x0000ffff) : 0;
		CTX_WORD(ctx->user_ip6[3]) = is_ipv4 ? bpf_htonl(0x7f000001) : bpf_htonl(1);
	} else {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
	}
	ctx->user_port = bpf_htons(to_port);
	return 1;
}

SEC("cgroup/connect4")
int flb_connect4(struct bpf_sock_addr *ctx)
{
	return redirect(ctx, 0);
}

SEC("cgroup/connect6")
int flb_connect6(struct bpf_sock_addr *ctx)
{
	return redirect(ctx, 1);
}

/* An unconnected UDP socket's sendto(): only these carry an address (a connected one went through connect). */
SEC("cgroup/sendmsg4")
int flb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return redirect(ctx, 0);
}

SEC("cgroup/sendmsg6")
int flb_sendmsg6(struct bpf_sock_addr *ctx)
{
	return redirect(ctx, 1);
}

/*
 * A DNS reply from the sidecar's resolver is shown as coming from the server the app asked: glibc
 * drops answers whose source is not one of its nameservers.
 */
static __always_inline int restore_dns_source(struct bpf_sock_addr *ctx, int ipv6_hook)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	const struct flb_original *original = bpf_map_lookup_elem(&flb_dns_cookie, &cookie);
	if (!original)
		return 1;
	__u64 netns_cookie = bpf_get_netns_cookie(ctx);
	const struct flb_settings *settings = bpf_map_lookup_elem(&flb_settings, &netns_cookie);
	if (!settings || ctx->user_port != bpf_htons(settings->dns_port))
		return 1;
	if (ipv6_hook) {
		__u32 ip6[4] = { CTX_WORD(ctx->user_ip6[0]), CTX_WORD(ctx->user_ip6[1]), CTX_WORD(ctx->user_ip6[2]), CTX_WORD(ctx->user_ip6[3]) };
		int from_resolver = ip6[0] == 0 && ip6[1] == 0 &&
				    ((ip6[2] == 0 && ip6[3] == bpf_htonl(1)) || (ip6[2] == bpf_htonl(0x0000ffff) && ip6[3] == bpf_htonl(0x7f000001)));
		if (!from_resolver)
			return 1;
		__u32 restored[4];
		__builtin_memcpy(restored, original->address, 16);
		CTX_WORD(ctx->user_ip6[0]) = restored[0];
		CTX_WORD(ctx->user_ip6[1]) = restored[1];
		CTX_WORD(ctx->user_ip6[2]) = restored[2];
		CTX_WORD(ctx->user_ip6[3]) = restored[3];
	} else {
		if (ctx->user_ip4 != bpf_htonl(0x7f000001) || !original->is_ipv4)
			return 1;
		__u32 ip4;
		__builtin_memcpy(&ip4, &original->address[12], 4);
		ctx->user_ip4 = ip4;
	}
	ctx->user_port = bpf_htons(original->port);
	return 1;
}

SEC("cgroup/recvmsg4")
int flb_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore_dns_source(ctx, 0);
}

SEC("cgroup/recvmsg6")
int flb_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore_dns_source(ctx, 1);
}

SEC("sockops")
int flb_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		cookie = bpf_get_socket_cookie(skops);
		struct flb_original *original = bpf_map_lookup_elem(&flb_orig_cookie, &cookie);
		if (!original)
			return 1;
		struct flb_tuple_key key;
		__builtin_memset(&key, 0, sizeof key);
		key.netns_cookie = bpf_get_netns_cookie(skops);
		if (skops->family == AF_INET) {
			map_ipv4(key.app_address, skops->local_ip4);
			map_ipv4(key.proxy_address, skops->remote_ip4);
		} else {
			/* A v6 socket connected to a v4 address holds both as ::ffff:a.b.c.d, as we key them. */
			__u32 local[4] = { CTX_WORD(skops->local_ip6[0]), CTX_WORD(skops->local_ip6[1]), CTX_WORD(skops->local_ip6[2]), CTX_WORD(skops->local_ip6[3]) };
			__u32 remote[4] = { CTX_WORD(skops->remote_ip6[0]), CTX_WORD(skops->remote_ip6[1]), CTX_WORD(skops->remote_ip6[2]), CTX_WORD(skops->remote_ip6[3]) };
			__builtin_memcpy(key.app_address, local, 16);
			__builtin_memcpy(key.proxy_address, remote, 16);
		}
		key.app_port = (__u16)skops->local_port;
		/* remote_port holds the port in network order in its upper 16 bits on little-endian hosts. */
		key.proxy_port = (__u16)bpf_ntohl(skops->remote_port);
		bpf_map_update_elem(&flb_orig_tuple, &key, original, BPF_ANY);
		/* To forget the cookie entry when the connection closes; other programs' callbacks stay on. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB: {
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&flb_orig_cookie, &cookie);
		/*
		 * The tuple entry is left to the LRU: the sidecar may accept (and ask) after the app has
		 * already closed a short connection.
		 */
		return 1;
	}
	default:
		return 1;
	}
}

SEC("cgroup/getsockopt")
int flb_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->optname != ORIGINAL_DST_OPTNAME || (ctx->level != SOL_IP && ctx->level != SOL_IPV6))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct flb_tuple_key key;
	__builtin_memset(&key, 0, sizeof key);
	key.netns_cookie = bpf_get_netns_cookie(ctx);
	/* The sidecar's accepted socket: its source is the proxy's address, its destination the app's. */
	if (sk->family == AF_INET) {
		map_ipv4(key.proxy_address, sk->src_ip4);
		map_ipv4(key.app_address, sk->dst_ip4);
	} else {
		__u32 src[4] = { CTX_WORD(sk->src_ip6[0]), CTX_WORD(sk->src_ip6[1]), CTX_WORD(sk->src_ip6[2]), CTX_WORD(sk->src_ip6[3]) };
		__u32 dst[4] = { CTX_WORD(sk->dst_ip6[0]), CTX_WORD(sk->dst_ip6[1]), CTX_WORD(sk->dst_ip6[2]), CTX_WORD(sk->dst_ip6[3]) };
		__builtin_memcpy(key.proxy_address, src, 16);
		__builtin_memcpy(key.app_address, dst, 16);
	}
	key.proxy_port = (__u16)sk->src_port;
	key.app_port = bpf_ntohs(sk->dst_port);
	struct flb_original *original = bpf_map_lookup_elem(&flb_orig_tuple, &key);
	if (!original)
		return 1;

	if (ctx->level == SOL_IP) {
		/* An IPv4 answer exists only for an IPv4 destination. */
		if (!original->is_ipv4)
			return 1;
		struct sockaddr_in *out = ctx->optval;
		if ((void *)(out + 1) > ctx->optval_end)
			return 1;
		out->sin_family = AF_INET;
		out->sin_port = bpf_htons(original->port);
		__builtin_memcpy(&out->sin_addr, &original->address[12], 4);
		__builtin_memset(out->__pad, 0, sizeof out->__pad);
		ctx->optlen = sizeof *out;
	} else {
		struct sockaddr_in6 *out = ctx->optval;
		if ((void *)(out + 1) > ctx->optval_end)
			return 1;
		out->sin6_family = AF_INET6;
		out->sin6_port = bpf_htons(original->port);
		out->sin6_flowinfo = 0;
		__builtin_memcpy(&out->sin6_addr, original->address, 16);
		out->sin6_scope_id = 0;
		ctx->optlen = sizeof *out;
	}
	ctx->retval = 0;
	return 1;
}

SEC("cgroup/getpeername4")
int flb_peername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct flb_original *original = bpf_map_lookup_elem(&flb_orig_cookie, &cookie);
	if (!original)
		original = bpf_map_lookup_elem(&flb_dns_cookie, &cookie);
	if (!original)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, &original->address[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(original->port);
	return 1;
}

SEC("cgroup/getpeername6")
int flb_peername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct flb_original *original = bpf_map_lookup_elem(&flb_orig_cookie, &cookie);
	if (!original)
		original = bpf_map_lookup_elem(&flb_dns_cookie, &cookie);
	if (!original)
		return 1;
	__u32 ip6[4];
	__builtin_memcpy(ip6, original->address, 16);
	CTX_WORD(ctx->user_ip6[0]) = ip6[0];
	CTX_WORD(ctx->user_ip6[1]) = ip6[1];
	CTX_WORD(ctx->user_ip6[2]) = ip6[2];
	CTX_WORD(ctx->user_ip6[3]) = ip6[3];
	ctx->user_port = bpf_htons(original->port);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
