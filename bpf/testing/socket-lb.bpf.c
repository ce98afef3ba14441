// SPDX-License-Identifier: GPL-2.0
/*
 * For the coexistence test only: a stand-in for a CNI's socket load balancer (Cilium's or
 * Calico's connect4 hook), attached before ours in the same cgroup. It rewrites the service
 * address 10.96.0.10:80 to the endpoint 10.200.0.5:8080, as those do with a ClusterIP, so ours
 * sees the endpoint, not the service.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("cgroup/connect4")
int test_socket_lb4(struct bpf_sock_addr *ctx)
{
	if (ctx->user_ip4 == bpf_htonl(0x0a60000a) && ctx->user_port == bpf_htons(80)) {
		ctx->user_ip4 = bpf_htonl(0x0ac80005);
		ctx->user_port = bpf_htons(8080);
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
