// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The listener sweep: a TCP iterator the agent runs once at start, in its own network namespace.
 * Linux asks the sock_ops program for a listener's SYN-ACK options only if that program enabled
 * it when the socket began to listen, so a service already listening before the fast path was
 * attached would keep its pairs on the queue. This program enables it on every listener whose
 * cgroup is the fast path's cgroup or below it (sockets elsewhere never meet that program), and
 * writes one record per such listener for the agent: port, family, and whether it was enabled
 * before. Unlike fast_path.bpf.c it reads kernel structs (CO-RE, relocated by libbpf against the
 * running kernel's BTF) and is a tracing program: loading it needs CAP_PERFMON (which the fast
 * path itself does not need), and setting the flag from an iterator needs Linux 6.12 or later.
 * The fast path runs without the sweep when it cannot run. */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "fast_path.h"

#define TCP_LISTEN 10
#define SOL_TCP 6
#define TCP_BPF_SOCK_OPS_CB_FLAGS 1008
#define TCP_SAVE_SYN 27
/* Deeper cgroups than this are not searched for the fast path's cgroup among their ancestors. */
#define MAX_CGROUP_DEPTH 32

/* Only the fields read here; libbpf finds their offsets in the running kernel. */
struct kernfs_node {
  __u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
  int level;
  struct kernfs_node *kn;
  struct cgroup *ancestors[];
} __attribute__((preserve_access_index));

struct sock_cgroup_data {
  struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct sock_common {
  unsigned short skc_family;
  volatile unsigned char skc_state;
  __u16 skc_num;
} __attribute__((preserve_access_index));

struct sock {
  struct sock_cgroup_data sk_cgrp_data;
} __attribute__((preserve_access_index));

struct tcp_sock {
  __u8 bpf_sock_ops_cb_flags;
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
  void *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
  struct bpf_iter_meta *meta;
  struct sock_common *sk_common;
} __attribute__((preserve_access_index));

/* The fast path's cgroup id (entry 0), written by the agent before it runs the iterator. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} sweep_cgroup SEC(".maps");

static __always_inline int under_cgroup(struct cgroup *cgroup, __u64 target) {
  int level = BPF_CORE_READ(cgroup, level);
  for (int i = 0; i < MAX_CGROUP_DEPTH; i++) {
    if (i > level) break;
    struct cgroup *ancestor = NULL;
    bpf_core_read(&ancestor, sizeof(ancestor), &cgroup->ancestors[i]);
    if (ancestor && BPF_CORE_READ(ancestor, kn, id) == target) return 1;
  }
  return 0;
}

SEC("iter/tcp")
int synpass_sweep_listeners(struct bpf_iter__tcp *ctx) {
  struct sock_common *common = ctx->sk_common;
  if (!common) return 0;
  struct tcp_sock *tcp = bpf_skc_to_tcp_sock(common);
  if (!tcp || common->skc_state != TCP_LISTEN) return 0;
  __u32 zero = 0;
  __u64 *target = bpf_map_lookup_elem(&sweep_cgroup, &zero);
  if (!target || *target == 0) return 0;
  struct cgroup *cgroup = BPF_CORE_READ((struct sock *)common, sk_cgrp_data.cgroup);
  if (!cgroup || !under_cgroup(cgroup, *target)) return 0;
  int flags = 0;
  struct sweep_record record = {.port = common->skc_num, .family = common->skc_family};
  if (bpf_getsockopt(tcp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)) != 0) {
    record.outcome = SWEEP_UNSUPPORTED;
  } else if (flags & BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG) {
    record.outcome = SWEEP_ALREADY;
  } else {
    flags |= BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
    record.outcome = bpf_setsockopt(tcp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)) == 0 ? SWEEP_ENABLED : SWEEP_UNSUPPORTED;
    /* As the sock_ops program does at listen: a SYN-ACK sent again can still carry the MAC. */
    int one = 1;
    if (record.outcome == SWEEP_ENABLED) bpf_setsockopt(tcp, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
  }
  bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
  return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
