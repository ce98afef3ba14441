// SPDX-License-Identifier: GPL-2.0
/*
 * For the loader's tests only: a program the verifier refuses (it reads past its context), so
 * that a load that fails half-way can be seen to leave nothing behind.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4")
int flb_connect4(struct bpf_sock_addr *ctx)
{
	return *(volatile __u32 *)((char *)ctx + 4096) != 0;
}

char LICENSE[] SEC("license") = "GPL";
