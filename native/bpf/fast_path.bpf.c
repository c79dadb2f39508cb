// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The kernel fast path: a known pair's handshake is proven and judged here, with no trip to the
 * agent. The client's sock_ops program writes a fast option into the SYN (fast id, time, MAC
 * over the ISN under a key the two agents derived at first contact); the server's tc ingress
 * program checks it, its freshness and its replay, reads the policy verdict the agent stored,
 * and marks what it accepts so the netfilter rules never queue it. The server's sock_ops
 * program answers with a MAC over both ISNs in the SYN-ACK, which the client's tc program
 * checks. First contact and everything else stay on the NFQUEUE path. Only UAPI contexts are
 * read (no kernel structs), so the object needs no CO-RE relocations. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fast_path.h"

#define SOL_SOCKET 1
#define SO_MARK 36
#define SOL_TCP 6
#define TCP_SAVE_SYN 27
#define AF_INET 2
#define AF_INET6 10
#define MAX_OPTION_BYTES 40
#define LABEL_SYN 1
#define LABEL_SYNACK 2
/* A SYN-ACK MAC under an entry the server proved with its previous keys (after a key rotation or
 * renewal): valid, and it tells the client to learn the server anew at its next connect. */
#define LABEL_SYNACK_RETIRING 3
/* SYN and ACK bits of skb_tcp_flags. */
#define TCPHDR_SYN_ACK_MASK 0x12

/* Sizes are documented in docs/operations.md ('Kernel fast path'); the agent checks its own
 * tables against them. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct fast_config);
} fast_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, FAST_COUNTER_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} fast_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct client_key);
  __type(value, struct client_value);
} fast_clients SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct sent_key);
  __type(value, struct conn_value);
} fast_conns SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct server_key);
  __type(value, struct server_value);
} fast_servers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 131072);
  __type(key, struct replay_key);
  __type(value, struct replay_value);
} fast_replay SEC(".maps");

/* Server: 1 for each local port that admits no peer without identity, from any address (the
 * agent computes it from policy); such a SYN is dropped here, without a queue trip. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, __u8);
} fast_cloak SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, 1024);
  __type(key, struct excluded_key);
  __type(value, __u8);
} fast_excluded SEC(".maps");

/* Connections the fast path judged, on either end: on the server, the peer its fast SYN proved
 * (whois); where conntrack is skipped, so that their later packets are marked untracked. One
 * table, so the server's accept writes one entry. An LRU: an evicted connection's packets meet
 * conntrack again, which picks it up, and whois no longer finds it in the kernel. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct flow_key);
  __type(value, struct flow_value);
} fast_flows SEC(".maps");

/* Client: configured workload cgroups (systemd units, pods), cgroup id -> workload number. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u64);
  __type(value, __u32);
} fast_workloads SEC(".maps");

/* Client, on a node: its pods' addresses, address -> pod number (from 1). A socket of another
 * network namespace that connects from one of them is that pod's (the queue path trusts the same
 * address). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 2048);
  __type(key, struct pod_key);
  __type(value, __u32);
} fast_pods SEC(".maps");

/* On a node: pairs of its pods judged for a port (struct pod_pair_key). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8192);
  __type(key, struct pod_pair_key);
  __type(value, struct pod_pair_value);
} fast_pod_pairs SEC(".maps");

/* Client: the cgroup workload number of each connection whose SYN goes to the queue, for the
 * agent to read there (NFQUEUE reports only the socket's uid), and for synpass_translated_syn after
 * a DNAT of this host (where it translates its output, a uid's too, as 0). The agent takes each
 * entry at its SYN; an LRU, so those of SYNs the queue never sees (destinations outside the
 * targets, SYNs sent fast after the DNAT) age out. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct owner_key);
  __type(value, __u32);
} fast_owners SEC(".maps");

/* Per-source buckets for SYNs going on to the queue. An LRU: a source idle long enough to be
 * evicted had a full bucket anyway. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct source_key);
  __type(value, struct source_bucket);
} fast_sources SEC(".maps");

/* The fast path's marker-less counterpart: the agent's first-contact marker, kind 253 with ExID
 * 0xd350 (agent/src/datapath/marker.ts), sits in the last word of the options. */
#define MARKER_KIND 253
#define MARKER_EXID 0xd350

/* Kernel verdicts for the flow log: bounded, and gated per source so a flood costs one event a
 * second per (source, cause), however fast it comes. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} fast_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct event_gate_key);
  __type(value, struct event_gate_value);
} fast_event_gate SEC(".maps");

/* A client socket's way through the fast path: its SYN carries the option (FAST); the first
 * packet after it (the handshake's ACK) leaves marked to release the connection in the rules
 * (RELEASING); the next one finds the socket's own mark back (DONE). FALLBACK: the SYN went
 * unanswered and the queue takes over. NAMING: a workload's connection with no entry (where this
 * host translates its output, a uid's too), whose SYN names its workload as it leaves (then DONE),
 * for the queue or the rules after a DNAT. */
enum sock_state { SOCK_FAST = 1, SOCK_RELEASING = 2, SOCK_DONE = 3, SOCK_FALLBACK = 4, SOCK_NAMING = 5 };

struct sock_state_value {
  __u32 state;
  __u32 original_mark;
  __u32 fast_id;
  __u32 workload; /* its cgroup workload (0: none), for the queue if the SYN falls back */
  __u8 key[16];
  __u32 owner_kind; /* the fast_clients entry it took: owner (address and port are the socket's) */
  __u32 owner;
  __u32 isn; /* of the fast SYN, which keys its fast_conns record */
  __u32 pod; /* a pod's socket: its marks would not cross its link into the node, so none is set */
  __u32 untracked; /* its SYN left with the socket's own mark and untracked, which it keeps */
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct sock_state_value);
} fast_sockets SEC(".maps");

static __always_inline void count(__u32 counter) {
  __u64 *value = bpf_map_lookup_elem(&fast_counters, &counter);
  if (value) *value += 1;
}

static __always_inline struct fast_config *config(void) {
  __u32 zero = 0;
  struct fast_config *cfg = bpf_map_lookup_elem(&fast_config, &zero);
  return cfg && cfg->enabled ? cfg : 0;
}

/* The mark that leaves a connection judged now out of conntrack: 0 where the fast path keeps
 * conntrack, from the start or since NAT rules appeared (track_new). A connection judged before
 * keeps what it was given (its flow's and its socket's untracked), whatever this says later. */
static __always_inline __u32 skip_conntrack_mark(const struct fast_config *cfg) {
  return cfg->track_new ? 0 : cfg->untracked_mark;
}

static __always_inline __u32 now_seconds(const struct fast_config *cfg) {
  return (__u32)(((__u64)bpf_ktime_get_boot_ns() + (__u64)cfg->realtime_offset_ns) / 1000000000ULL);
}

/* Whether an agent vouches for these programs: it moves alive_until on every second, and a
 * stopping agent that keeps them for its next start sets it once. Programs it left behind (a
 * crash, an uninstall) judge nothing once it passed: handshakes then meet the rules as without
 * a fast path. */
static __always_inline int vouched(const struct fast_config *cfg, __u32 now) {
  return now <= cfg->alive_until;
}

#define ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                 \
  do {                                                                                           \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                    \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                       \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                       \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                    \
  } while (0)

/* SipHash-2-4 of two 64-bit words: the MAC Linux itself uses for SYN cookies; plain ARX. */
static __always_inline __u64 siphash(const __u8 key[16], __u64 m0, __u64 m1) {
  __u64 k0 = 0, k1 = 0;
  __builtin_memcpy(&k0, key, 8);
  __builtin_memcpy(&k1, key + 8, 8);
  __u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
  __u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
  v3 ^= m0; SIPROUND; SIPROUND; v0 ^= m0;
  v3 ^= m1; SIPROUND; SIPROUND; v0 ^= m1;
  __u64 b = 16ULL << 56;
  v3 ^= b; SIPROUND; SIPROUND; v0 ^= b;
  v2 ^= 0xff;
  SIPROUND; SIPROUND; SIPROUND; SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* The SYN's MAC binds the peer workload's entry (fast id), the time and the client's ISN. */
static __always_inline __u64 syn_mac(const __u8 key[16], __u32 fast_id, __u32 time, __u32 isn) {
  return siphash(key, ((__u64)LABEL_SYN << 32) | fast_id, ((__u64)time << 32) | isn);
}

/* The SYN-ACK's MAC binds both ISNs, and with its label whether the server's keys changed. */
static __always_inline __u64 synack_mac(const __u8 key[16], __u32 label, __u32 fast_id, __u32 client_isn, __u32 server_isn) {
  return siphash(key, ((__u64)label << 32) | fast_id, ((__u64)server_isn << 32) | client_isn);
}

static __always_inline __u32 read_be32(const __u8 *p) {
  return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline __u64 read_be64(const __u8 *p) {
  return ((__u64)read_be32(p) << 32) | read_be32(p + 4);
}

static __always_inline void write_be32(__u8 *p, __u32 v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static __always_inline void write_be64(__u8 *p, __u64 v) {
  write_be32(p, v >> 32);
  write_be32(p + 4, (__u32)v);
}

/* A SYN's fast option (kind, length, ExID, fast id, time, MAC), as the sock_ops program writes it
 * and the tc egress program after a DNAT. */
static __always_inline void fast_syn_option(__u8 opt[FAST_SYN_OPT_LEN], const __u8 key[16], __u32 fast_id, __u32 time, __u32 isn) {
  opt[0] = FAST_OPT_KIND;
  opt[1] = FAST_SYN_OPT_LEN;
  opt[2] = FAST_OPT_EXID >> 8;
  opt[3] = FAST_OPT_EXID & 0xff;
  write_be32(opt + 4, fast_id);
  write_be32(opt + 8, time);
  write_be64(opt + 12, syn_mac(key, fast_id, time, isn));
}

static __always_inline void mapped_ipv4(__u8 out[16], __u32 address_be) {
  __builtin_memset(out, 0, 10);
  out[10] = 0xff;
  out[11] = 0xff;
  __builtin_memcpy(out + 12, &address_be, 4);
}

static __always_inline int same_address(const __u8 a[16], const __u8 b[16]) {
  __u64 a0, a1, b0, b1;
  __builtin_memcpy(&a0, a, 8);
  __builtin_memcpy(&a1, a + 8, 8);
  __builtin_memcpy(&b0, b, 8);
  __builtin_memcpy(&b1, b + 8, 8);
  return a0 == b0 && a1 == b1;
}

/* The other end's view of a connection. */
static __always_inline void reverse_flow(const struct flow_key *flow, struct flow_key *out) {
  __builtin_memcpy(out->local, flow->remote, 16);
  __builtin_memcpy(out->remote, flow->local, 16);
  out->local_port = flow->remote_port;
  out->remote_port = flow->local_port;
}

/* ---- tc ingress ---------------------------------------------------------------------------- */

struct parsed {
  __u8 ipv4;
  __u8 source[16];
  __u8 destination[16];
  struct tcphdr tcp;
  __u32 option_base; /* packet offset of the first option byte */
  __u32 option_bytes;
};

/* Offset (from option_base) of the fast option of `length`, or -1. Linux writes the options a
 * BPF program reserves after its own, and ours fill whole words, so a fast option is the last
 * `length` bytes of the header: one read, no walk over the options. An option elsewhere is not
 * looked for, so such a SYN meets the queue, which drops it. */
static __always_inline int find_fast_option(struct __sk_buff *skb, const struct parsed *p, __u8 length) {
  __u8 head[4];
  if (p->option_bytes < length || p->option_bytes > MAX_OPTION_BYTES) return -1;
  __u32 at = p->option_bytes - length;
  if (bpf_skb_load_bytes(skb, p->option_base + at, head, sizeof(head)) < 0) return -1;
  if (head[0] != FAST_OPT_KIND || head[1] != length || head[2] != (FAST_OPT_EXID >> 8) || head[3] != (FAST_OPT_EXID & 0xff)) return -1;
  return (int)at;
}

/* Reads the addresses and TCP header of a TCP segment; 0 when it is not one. */
static __always_inline int parse(struct __sk_buff *skb, struct parsed *p) {
  __u32 tcp_offset;
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0) return 0;
    if (ip.protocol != IPPROTO_TCP || (ip.frag_off & bpf_htons(0x3fff)) != 0 || ip.ihl < 5) return 0;
    p->ipv4 = 1;
    mapped_ipv4(p->source, ip.saddr);
    mapped_ipv4(p->destination, ip.daddr);
    tcp_offset = ETH_HLEN + ip.ihl * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0) return 0;
    /* Extension headers before TCP: left to the queue path, which judges any SYN. */
    if (ip6.nexthdr != IPPROTO_TCP) return 0;
    __builtin_memcpy(p->source, &ip6.saddr, 16);
    __builtin_memcpy(p->destination, &ip6.daddr, 16);
    tcp_offset = ETH_HLEN + sizeof(ip6);
  } else {
    return 0;
  }
  if (bpf_skb_load_bytes(skb, tcp_offset, &p->tcp, sizeof(p->tcp)) < 0) return 0;
  __u32 header_bytes = p->tcp.doff * 4;
  if (header_bytes < sizeof(struct tcphdr)) return 0;
  p->option_base = tcp_offset + sizeof(struct tcphdr);
  p->option_bytes = header_bytes - sizeof(struct tcphdr);
  return 1;
}

/* The receiving end's view of a segment's connection. */
static __always_inline void flow_of(const struct parsed *p, struct flow_key *key) {
  key->local_port = bpf_ntohs(p->tcp.dest);
  key->remote_port = bpf_ntohs(p->tcp.source);
  __builtin_memcpy(key->local, p->destination, 16);
  __builtin_memcpy(key->remote, p->source, 16);
}

/* An event with the addresses and ports filled in, or null (counted) when the ring is full. */
static __always_inline struct fast_event *new_event(__u32 counter, __u32 fast_id, const __u8 source[16], const __u8 destination[16], __u16 source_port, __u16 destination_port) {
  struct fast_event *event = bpf_ringbuf_reserve(&fast_events, sizeof(*event), 0);
  if (!event) {
    count(FAST_EVENTS_LOST);
    return 0;
  }
  event->counter = counter;
  event->fast_id = fast_id;
  __builtin_memcpy(event->source, source, 16);
  __builtin_memcpy(event->destination, destination, 16);
  event->source_port = source_port;
  event->destination_port = destination_port;
  event->folded = 0;
  event->owner_kind = 0;
  event->owner = 0;
  return event;
}

static __always_inline void emit(__u32 counter, const struct parsed *p, __u32 fast_id, __u32 folded) {
  struct fast_event *event = new_event(counter, fast_id, p->source, p->destination, bpf_ntohs(p->tcp.source), bpf_ntohs(p->tcp.dest));
  if (!event) return;
  event->folded = folded;
  bpf_ringbuf_submit(event, 0);
}

/* A drop: counted always, reported to the agent at most once a second per (source, cause). */
static __always_inline int drop(__u32 counter, const struct parsed *p, __u32 fast_id) {
  count(counter);
  struct event_gate_key key = {.counter = counter};
  __builtin_memcpy(key.source, p->source, 16);
  __u64 second = bpf_ktime_get_boot_ns() / 1000000000ULL;
  struct event_gate_value *gate = bpf_map_lookup_elem(&fast_event_gate, &key);
  if (gate && gate->second == second) {
    __sync_fetch_and_add(&gate->folded, 1);
    return TC_ACT_SHOT;
  }
  __u32 folded = gate ? gate->folded : 0;
  struct event_gate_value fresh = {.second = second};
  bpf_map_update_elem(&fast_event_gate, &key, &fresh, BPF_ANY);
  emit(counter, p, fast_id, folded);
  return TC_ACT_SHOT;
}

/* Whether the SYN is addressed to this host rather than to one it routes for (a container or VM
 * in a network namespace of its own, behind a bridge): what it routes is not its own to judge,
 * and the rules leave it alone too (rules.ts). Asked of the routing table as the packet will be;
 * a host that forwards nothing keeps everything, and a route that drops counts as here. A node's
 * pods are its own (routed_workloads). Only SYNs about to be dropped ask. */
static __always_inline int addressed_here(struct __sk_buff *skb, const struct fast_config *cfg, const struct parsed *p) {
  if (cfg->routed_workloads) return 1;
  struct bpf_fib_lookup fib = {};
  fib.ifindex = skb->ingress_ifindex;
  fib.l4_protocol = IPPROTO_TCP;
  fib.sport = p->tcp.source;
  fib.dport = p->tcp.dest;
  if (p->ipv4) {
    fib.family = AF_INET;
    __builtin_memcpy(&fib.ipv4_src, p->source + 12, 4);
    __builtin_memcpy(&fib.ipv4_dst, p->destination + 12, 4);
  } else {
    fib.family = AF_INET6;
    __builtin_memcpy(fib.ipv6_src, p->source, 16);
    __builtin_memcpy(fib.ipv6_dst, p->destination, 16);
  }
  long routed = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
  return routed != BPF_FIB_LKUP_RET_SUCCESS && routed != BPF_FIB_LKUP_RET_NO_NEIGH;
}

/* What a SYN or SYN-ACK the kernel proved carries besides accept_mark where the fast path skips
 * conntrack: untracked, and judged as the rules' mark chain would mark it, so that they let it by
 * without walking a chain (rules.ts). Where conntrack is kept, the chain walks it, and copies
 * accept_mark's release into the connmark. */
static __always_inline __u32 untracked_judged(const struct fast_config *cfg) {
  __u32 untracked = skip_conntrack_mark(cfg);
  return untracked != 0 ? untracked | cfg->judged_mark : 0;
}

static __always_inline int judge_fast_syn(struct __sk_buff *skb, const struct fast_config *cfg, struct parsed *p, const __u8 opt[FAST_SYN_OPT_LEN], __u32 now) {
  struct server_key key = {};
  __builtin_memcpy(key.address, p->source, 16);
  __builtin_memcpy(key.local, p->destination, 16);
  key.fast_id = read_be32(opt + 4);
  key.port = bpf_ntohs(p->tcp.dest);
  __u32 time = read_be32(opt + 8);
  __u32 isn = bpf_ntohl(p->tcp.seq);
  struct server_value *entry = bpf_map_lookup_elem(&fast_servers, &key);
  /* Another agent's fast SYN on its way through this host (a router) is not this one's to know. */
  if (!entry && !addressed_here(skb, cfg, p)) return TC_ACT_OK;
  /* Past its end the entry proves nothing, whether or not an agent is there to remove it. */
  if (!entry || now >= entry->expires) return drop(FAST_SYN_UNKNOWN, p, key.fast_id);
  __u32 skew = now > time ? now - time : time - now;
  if (skew > cfg->window_seconds) return drop(FAST_SYN_STALE, p, key.fast_id);
  if (syn_mac(entry->key, key.fast_id, time, isn) != read_be64(opt + 12)) return drop(FAST_SYN_BAD_PROOF, p, key.fast_id);
  if (!entry->allowed) return drop(FAST_SYN_NOT_ALLOWED, p, key.fast_id);
  /* Only a proven SYN reaches the replay table, so a flood of forgeries cannot evict it. */
  struct replay_key seen = {.fast_id = key.fast_id, .isn = isn, .time = time};
  __builtin_memcpy(seen.address, p->source, 16);
  struct replay_value proven = {.retiring = entry->retiring};
  __builtin_memcpy(proven.key, entry->key, 16);
  if (bpf_map_update_elem(&fast_replay, &seen, &proven, BPF_NOEXIST) != 0) return drop(FAST_SYN_REPLAYED, p, key.fast_id);
  struct flow_key conn = {};
  flow_of(p, &conn);
  struct flow_value flow = {.fast_id = key.fast_id, .proven_peer = 1, .untracked = skip_conntrack_mark(cfg) != 0};
  bpf_map_update_elem(&fast_flows, &conn, &flow, BPF_ANY);
  skb->mark |= cfg->accept_mark | untracked_judged(cfg);
  count(FAST_SYN_ACCEPTED);
  if (cfg->accept_sample != 0 && bpf_get_prandom_u32() < cfg->accept_sample) emit(FAST_SYN_ACCEPTED, p, key.fast_id, 0);
  return TC_ACT_OK;
}

/* A local pod's fast SYN, where it enters the node from the pod's link: this node's own sock_ops
 * program wrote it, as its record says (fast_conns: the pod's address and port, and a MAC that
 * checks under the record's key), so the rules let it by on both hooks (pod_mark), and conntrack
 * too where the fast path skips it. Its server's kernel judges it. The marks the pod's socket
 * could carry do not cross its link, and a pod cannot write a record: a SYN it made up itself is
 * no such SYN. -1 when the SYN is not one: it is then judged as sent to this node or its pods. */
static __always_inline int vouch_pod_syn(struct __sk_buff *skb, const struct fast_config *cfg, const struct parsed *p, const __u8 opt[FAST_SYN_OPT_LEN]) {
  struct sent_key key = {.isn = bpf_ntohl(p->tcp.seq), .server_port = bpf_ntohs(p->tcp.dest)};
  __builtin_memcpy(key.server, p->destination, 16);
  struct conn_value *sent = bpf_map_lookup_elem(&fast_conns, &key);
  if (!sent || !sent->pod || sent->client_port != bpf_ntohs(p->tcp.source) || !same_address(sent->client, p->source)) return -1;
  if (read_be32(opt + 4) != sent->fast_id || syn_mac(sent->key, sent->fast_id, read_be32(opt + 8), key.isn) != read_be64(opt + 12)) return -1;
  skb->mark |= cfg->pod_mark | (sent->untracked ? cfg->untracked_mark : 0);
  return TC_ACT_OK;
}

static __always_inline int any_marker_option(struct __sk_buff *skb, const struct parsed *p);

/* A client entry whose server proved a SYN-ACK under its previous keys (after a key rotation or
 * renewal) goes, unless a newer one replaced it, so that the next connect is a first contact that
 * learns the new keys rather than a fast SYN the server drops once those expire. Reported, so the
 * agent forgets it too (`local`: the connection's own end). */
static __always_inline void retire_client(const struct client_key *client, __u32 fast_id, const __u8 local[16], __u16 local_port) {
  struct client_value *entry = bpf_map_lookup_elem(&fast_clients, client);
  if (!entry || entry->fast_id != fast_id) return;
  bpf_map_delete_elem(&fast_clients, client);
  count(FAST_CLIENT_RETIRED);
  struct fast_event *event = new_event(FAST_CLIENT_RETIRED, fast_id, client->address, local, client->port, local_port);
  if (!event) return;
  event->owner_kind = client->owner_kind;
  event->owner = client->owner;
  bpf_ringbuf_submit(event, 0);
}

/* The record of a SYN this host sent fast after its DNAT (synpass_translated_syn) is done with at its
 * first answer: no socket takes it at establishment (client_established: its socket never sent a
 * fast SYN), and a later answer finds the connection released already, or judged by the agent. */
static __always_inline void forget_translated(const struct sent_key *key, const struct conn_value *sent, const struct parsed *p) {
  if (sent->retiring) {
    struct client_key client = {.port = key->server_port, .owner_kind = (__u16)sent->owner_kind, .owner = sent->owner};
    __builtin_memcpy(client.address, key->server, 16);
    retire_client(&client, sent->fast_id, p->destination, bpf_ntohs(p->tcp.dest));
  }
  bpf_map_delete_elem(&fast_conns, key);
}

static __always_inline int judge_synack(struct __sk_buff *skb, const struct fast_config *cfg, const struct parsed *p) {
  struct sent_key key = {.isn = bpf_ntohl(p->tcp.ack_seq) - 1, .server_port = bpf_ntohs(p->tcp.source)};
  __builtin_memcpy(key.server, p->source, 16);
  struct conn_value *sent = bpf_map_lookup_elem(&fast_conns, &key);
  /* Only connections that sent a fast SYN expect the server's MAC. */
  if (!sent) return TC_ACT_OK;
  int at = find_fast_option(skb, p, FAST_SYNACK_OPT_LEN);
  /* After a fallback the answer may be the queue's, to the retransmit: the agent judges it. */
  if (at < 0 && sent->fallback) {
    if (sent->translated) forget_translated(&key, sent, p);
    return TC_ACT_OK;
  }
  __u8 opt[FAST_SYNACK_OPT_LEN];
  if (at < 0 || bpf_skb_load_bytes(skb, p->option_base + (__u32)at, opt, sizeof(opt)) < 0) return drop(FAST_SYNACK_BAD_PROOF, p, sent->fast_id);
  __u32 server_isn = bpf_ntohl(p->tcp.seq);
  __u64 mac = read_be64(opt + 4);
  /* The second MAC is computed only when the first does not match: rarely, and then once. */
  if (synack_mac(sent->key, LABEL_SYNACK, sent->fast_id, key.isn, server_isn) != mac) {
    if (synack_mac(sent->key, LABEL_SYNACK_RETIRING, sent->fast_id, key.isn, server_isn) != mac) return drop(FAST_SYNACK_BAD_PROOF, p, sent->fast_id);
    sent->retiring = 1;
  }
  count(FAST_SYNACK_VERIFIED);
  /* Judged: the rules let it by and release the connection, whatever conntrack holds for these
   * ports (a reused 4-tuple's entry an earlier handshake left marked `track` would otherwise queue
   * it to an agent that never saw the fast SYN, which drops it). A pod's answer goes on through
   * the node this way too: the pod's handshake ACK carries no mark into it. After a fallback it is
   * the fast SYN's own answer, its first one lost: the server's kernel answers every retransmit
   * from the connection the fast SYN opened, and where conntrack follows that connection there
   * its rules release it, so no agent ever sees this answer; conntrack follows the retransmit
   * here, and so this answer. One with a marker (the server's agent answered) stays unmarked, so
   * that the agent here judges it and its token never reaches the socket. A connection through
   * this host's DNAT needs conntrack, to undo the translation, as after a fallback. */
  __u32 tracked = sent->fallback || sent->translated || !sent->untracked;
  __u32 mark = any_marker_option(skb, p) ? (tracked ? 0 : cfg->untracked_mark) : cfg->accept_mark | (tracked ? 0 : cfg->untracked_mark | cfg->judged_mark);
  skb->mark |= mark;
  if (sent->translated) forget_translated(&key, sent, p);
  return TC_ACT_OK;
}

/* One walk over a segment's TCP options, stepped by bpf_loop. */
struct option_walk {
  struct __sk_buff *skb;
  __u32 base;
  __u32 bytes;
  __u32 at;
  int marker;
};

/* One option of the walk: 1 to stop (with `marker` set), 0 to go on. Each step reads the
 * option's kind and length from the packet into fixed stack slots, and the walk runs under
 * bpf_loop, whose callback the verifier checks once: indexing a buffer at a computed offset
 * passes only with CAP_PERFMON (Spectre hardening), and an unrolled or bounded loop of packet
 * reads gives the verifier a state per step and option kind, more than it explores. */
static long option_step(__u32 index, struct option_walk *walk) {
  __u32 at = walk->at;
  if (at >= walk->bytes) return 1;
  __u8 option[2] = {};
  int whole = at + 2 <= walk->bytes;
  int read = whole ? bpf_skb_load_bytes(walk->skb, walk->base + at, option, 2) : bpf_skb_load_bytes(walk->skb, walk->base + at, option, 1);
  if (read < 0 || (option[0] > 1 && (option[0] == MARKER_KIND || !whole || option[1] < 2))) {
    walk->marker = 1;
    return 1;
  }
  if (option[0] == 0) return 1;
  walk->at = at + (option[0] == 1 ? 1 : option[1]);
  return 0;
}

/* Whether any option has the marker's kind, wherever it sits: what the rules' `--tcp-option`
 * test matches. An option list that does not parse counts as having one. */
static __always_inline int any_marker_option(struct __sk_buff *skb, const struct parsed *p) {
  if (p->option_bytes > MAX_OPTION_BYTES) return 1;
  if (p->option_bytes == 0) return 0;
  /* Most later segments carry what Linux writes when nothing else is to be said: NOP, NOP,
   * timestamps (10 bytes), and no more. One read instead of a walk. */
  if (p->option_bytes == 12) {
    __u8 head[4];
    if (bpf_skb_load_bytes(skb, p->option_base, head, sizeof(head)) == 0 && head[0] == 1 && head[1] == 1 && head[2] == 8 && head[3] == 10) return 0;
  }
  struct option_walk walk = {.skb = skb, .base = p->option_base, .bytes = p->option_bytes};
  /* Every step moves on by at least one byte: as many steps as bytes at most. */
  bpf_loop(MAX_OPTION_BYTES, option_step, &walk, 0);
  return walk.marker;
}

/* A later segment of a connection the fast path judged leaves conntrack out, and skips the
 * mangle rules, which jump only for packets without the mark, or SYNs and SYN-ACKs. One with a
 * marker option stays unmarked, so the rules see it as they would on the queue path. */
static __always_inline int mark_judged_flow(struct __sk_buff *skb, const struct fast_config *cfg, const struct parsed *p) {
  if (cfg->untracked_mark == 0) return TC_ACT_OK;
  struct flow_key key = {};
  flow_of(p, &key);
  /* The lookup first: most segments belong to other connections and need no option walk. */
  struct flow_value *flow = bpf_map_lookup_elem(&fast_flows, &key);
  if (flow && flow->untracked && !any_marker_option(skb, p)) skb->mark |= cfg->untracked_mark;
  return TC_ACT_OK;
}

/* Whether the SYN carries the agent's first-contact marker (then the queue judges it). */
static __always_inline int has_marker(struct __sk_buff *skb, const struct parsed *p) {
  __u8 word[4];
  if (p->option_bytes < sizeof(word) || p->option_bytes > MAX_OPTION_BYTES) return 0;
  if (bpf_skb_load_bytes(skb, p->option_base + p->option_bytes - sizeof(word), word, sizeof(word)) < 0) return 0;
  return word[0] == MARKER_KIND && word[1] == 4 && word[2] == (MARKER_EXID >> 8) && word[3] == (MARKER_EXID & 0xff);
}

#define NSEC_PER_SEC 1000000000ULL

/* Takes one SYN from its source's bucket (source_rate a second, holding source_burst, at most one
 * second's worth); 0 when it is empty. Two CPUs may update one bucket at once and let a SYN or two
 * more by: a bound, not a count. */
static __always_inline int within_source_rate(const struct fast_config *cfg, const struct parsed *p) {
  struct source_key key = {};
  if (p->ipv4) __builtin_memcpy(key.network, p->source, 16);
  else __builtin_memcpy(key.network, p->source, 8);
  __u64 now = bpf_ktime_get_ns();
  __u64 full = (__u64)(cfg->source_burst > 0 ? cfg->source_burst : 1) * NSEC_PER_SEC;
  struct source_bucket *bucket = bpf_map_lookup_elem(&fast_sources, &key);
  if (!bucket) {
    struct source_bucket fresh = {.credit = full - NSEC_PER_SEC, .updated_ns = now};
    bpf_map_update_elem(&fast_sources, &key, &fresh, BPF_ANY);
    return 1;
  }
  __u64 elapsed = now - bucket->updated_ns;
  /* Below a second, elapsed times the rate (at most 10^6) stays far inside 64 bits. */
  __u64 credit = elapsed >= NSEC_PER_SEC ? full : bucket->credit + elapsed * cfg->source_rate;
  if (credit > full) credit = full;
  bucket->updated_ns = now;
  if (credit < NSEC_PER_SEC) {
    bucket->credit = credit;
    return 0;
  }
  bucket->credit = credit - NSEC_PER_SEC;
  return 1;
}

/* On a node: the entry for this pair of addresses and the SYN's port while it holds: two of its
 * pods the agent judged for that port, or a pod and a service address it reached a pod of this
 * node or another host through (deferred). */
static __always_inline struct pod_pair_value *known_pod_pair(const struct parsed *p, __u32 now) {
  struct pod_pair_key key = {.port = bpf_ntohs(p->tcp.dest)};
  __builtin_memcpy(key.client, p->source, 16);
  __builtin_memcpy(key.server, p->destination, 16);
  struct pod_pair_value *pair = bpf_map_lookup_elem(&fast_pod_pairs, &key);
  return pair && now < pair->expires ? pair : 0;
}

/* A SYN with no fast option: on a node, accepted here from one of its pods to another for a port
 * the agent judged that pair for (without a marker: a pod sends none, and one that carries it is
 * the queue's); dropped here when it carries no marker and its port admits no peer without
 * identity; otherwise charged to its source's bucket (dropped when empty) and passed on
 * to the rules and queue, marked so they do not charge it again. While the agent is away (it
 * stopped and kept the programs) there are no rules and no one to check a marker: a SYN with one
 * is dropped as one without, as the rules would drop it, failing closed, had the agent crashed.
 * Sources excluded from synpass are left alone, and so are SYNs this host only routes. */
static __always_inline int judge_plain_syn(struct __sk_buff *skb, const struct fast_config *cfg, const struct parsed *p, __u32 now) {
  /* A new connection on the ports of an earlier fast one: conntrack follows this one, and whois
   * no longer names the earlier one's peer for it. */
  struct flow_key flow = {};
  flow_of(p, &flow);
  bpf_map_delete_elem(&fast_flows, &flow);
  struct pod_pair_value *pair = cfg->routed_workloads ? known_pod_pair(p, now) : 0;
  if (pair && !pair->deferred && !has_marker(skb, p)) {
    /* Accepted as a proven fast SYN is: the rules release the connection (conntrack follows it). */
    skb->mark |= cfg->accept_mark;
    count(FAST_POD_SYN_ACCEPTED);
    if (cfg->accept_sample != 0 && bpf_get_prandom_u32() < cfg->accept_sample) emit(FAST_POD_SYN_ACCEPTED, p, 0, 0);
    return TC_ACT_OK;
  }
  if (pair && cfg->defer_mark != 0 && !cfg->agent_away && !has_marker(skb, p)) {
    /* To a service address: where it goes, the DNAT decides after this. The rules let it
     * through PREROUTING unqueued and judge it after the DNAT (synpass_service_backend, or the
     * queue). Nothing is charged to its source's bucket: a pod of this node is no stranger. */
    skb->mark |= cfg->defer_mark;
    count(FAST_SERVICE_SYN_DEFERRED);
    return TC_ACT_OK;
  }
  struct excluded_key source = {.prefix_bits = 128};
  __builtin_memcpy(source.address, p->source, 16);
  if (bpf_map_lookup_elem(&fast_excluded, &source)) return TC_ACT_OK;
  __u32 port = bpf_ntohs(p->tcp.dest);
  __u8 *closed = bpf_map_lookup_elem(&fast_cloak, &port);
  if (closed && *closed && (cfg->agent_away || !has_marker(skb, p)) && addressed_here(skb, cfg, p)) return drop(FAST_SYN_NO_IDENTITY, p, 0);
  if (cfg->source_rate == 0) return TC_ACT_OK;
  if (!within_source_rate(cfg, p)) return drop(FAST_SYN_SOURCE_LIMITED, p, 0);
  skb->mark |= cfg->budget_mark;
  return TC_ACT_OK;
}

SEC("tc")
int synpass_ingress(struct __sk_buff *skb) {
  struct fast_config *cfg = config();
  if (!cfg) return TC_ACT_OK;
  struct parsed p = {};
  if (!parse(skb, &p)) return TC_ACT_OK;
  if (!p.tcp.syn) return mark_judged_flow(skb, cfg, &p);
  __u32 now = now_seconds(cfg);
  if (p.tcp.rst || !vouched(cfg, now)) return TC_ACT_OK;
  if (p.tcp.ack) return judge_synack(skb, cfg, &p);
  int at = find_fast_option(skb, &p, FAST_SYN_OPT_LEN);
  if (at < 0) return judge_plain_syn(skb, cfg, &p, now);
  __u8 opt[FAST_SYN_OPT_LEN];
  if (bpf_skb_load_bytes(skb, p.option_base + (__u32)at, opt, sizeof(opt)) < 0) return TC_ACT_SHOT;
  if (cfg->routed_workloads) {
    int vouched = vouch_pod_syn(skb, cfg, &p, opt);
    if (vouched >= 0) return vouched;
  }
  return judge_fast_syn(skb, cfg, &p, opt, now);
}

/* ---- after the DNAT (iptables `-m bpf`) ------------------------------------------------------ */

/* A SYN as iptables' bpf match shows it to a socket filter, in mangle POSTROUTING: the packet
 * starts at its IP header, and its destination is the one the DNAT chose. */
struct routed_syn {
  struct pod_pair_key pair; /* source, destination, destination port */
  struct tcphdr tcp;
  __u32 option_bytes;
  __u32 payload_bytes;
};

/* Reads a SYN (not a SYN-ACK); 0 when the packet is none. */
static __always_inline int parse_routed_syn(struct __sk_buff *skb, struct routed_syn *syn) {
  __u8 version = 0;
  if (bpf_skb_load_bytes(skb, 0, &version, 1) < 0) return 0;
  __u32 tcp_offset, total;
  if ((version >> 4) == 4) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0) return 0;
    if (ip.protocol != IPPROTO_TCP || (ip.frag_off & bpf_htons(0x3fff)) != 0 || ip.ihl < 5) return 0;
    mapped_ipv4(syn->pair.client, ip.saddr);
    mapped_ipv4(syn->pair.server, ip.daddr);
    tcp_offset = ip.ihl * 4;
    total = bpf_ntohs(ip.tot_len);
  } else if ((version >> 4) == 6) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != IPPROTO_TCP) return 0;
    __builtin_memcpy(syn->pair.client, &ip6.saddr, 16);
    __builtin_memcpy(syn->pair.server, &ip6.daddr, 16);
    tcp_offset = sizeof(ip6);
    total = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
  } else {
    return 0;
  }
  if (bpf_skb_load_bytes(skb, tcp_offset, &syn->tcp, sizeof(syn->tcp)) < 0) return 0;
  if (!syn->tcp.syn || syn->tcp.ack || syn->tcp.rst) return 0;
  __u32 header_bytes = syn->tcp.doff * 4;
  if (header_bytes < sizeof(struct tcphdr) || total < tcp_offset + header_bytes) return 0;
  syn->option_bytes = header_bytes - sizeof(struct tcphdr);
  syn->payload_bytes = total - tcp_offset - header_bytes;
  syn->pair.port = bpf_ntohs(syn->tcp.dest);
  return 1;
}

/* Where both programs after the DNAT start: the config while an agent vouches for it (null
 * otherwise, or when the packet is no SYN), the clock, and the SYN. */
static __always_inline struct fast_config *vouched_routed_syn(struct __sk_buff *skb, struct routed_syn *syn, __u32 *now) {
  struct fast_config *cfg = config();
  if (!cfg) return 0;
  *now = now_seconds(cfg);
  return vouched(cfg, *now) && parse_routed_syn(skb, syn) ? cfg : 0;
}

/* A pod's SYN the tc program deferred past the DNAT (defer_mark), as the rules see it in mangle
 * POSTROUTING: the destination is now the pod the DNAT chose. Matches (1) when the agent judged
 * the two pods for that pod's port, so the rules let it by as the tc program lets by a SYN
 * addressed to that pod; otherwise (0) the rules ask synpass_translated_syn, then queue it.
 * Pinned: iptables' bpf match holds it by its path (--object-pinned). */
SEC("socket")
int synpass_service_backend(struct __sk_buff *skb) {
  struct routed_syn syn = {};
  __u32 now = 0;
  struct fast_config *cfg = vouched_routed_syn(skb, &syn, &now);
  if (!cfg) return 0;
  struct pod_pair_value *pair = bpf_map_lookup_elem(&fast_pod_pairs, &syn.pair);
  if (!pair || pair->deferred || now >= pair->expires) return 0;
  count(FAST_POD_SYN_ACCEPTED);
  if (cfg->accept_sample != 0 && bpf_get_prandom_u32() < cfg->accept_sample) {
    struct fast_event *event = new_event(FAST_POD_SYN_ACCEPTED, 0, syn.pair.client, syn.pair.server, bpf_ntohs(syn.tcp.source), syn.pair.port);
    if (event) bpf_ringbuf_submit(event, 0);
  }
  return 1;
}

/* Who sent a SYN the rules meet after a DNAT of this host, as its client entries name it: a pod
 * of the node, by its address (fast_pods, as the queue path names it), or a socket of this host
 * that named itself as its SYN left (fast_owners, by its address, port and ISN: its cgroup
 * workload, or 0 for its uid). 0 when neither: a segment made up on a raw socket names no one,
 * and one routed in from another network namespace carries no socket here. */
static __always_inline int translated_owner(struct __sk_buff *skb, const struct fast_config *cfg, const struct routed_syn *syn, struct client_key *client) {
  if (cfg->routed_workloads) {
    struct pod_key pod = {};
    __builtin_memcpy(pod.address, syn->pair.client, 16);
    __u32 *number = bpf_map_lookup_elem(&fast_pods, &pod);
    if (number) {
      client->owner_kind = OWNER_POD;
      client->owner = *number;
      return 1;
    }
  }
  if (bpf_get_socket_cookie(skb) == 0) return 0;
  struct owner_key key = {.isn = bpf_ntohl(syn->tcp.seq), .local_port = bpf_ntohs(syn->tcp.source)};
  __builtin_memcpy(key.local, syn->pair.client, 16);
  __u32 *workload = bpf_map_lookup_elem(&fast_owners, &key);
  if (!workload) return 0;
  __u32 number = *workload;
  client->owner_kind = number != 0 ? OWNER_WORKLOAD : OWNER_UID;
  client->owner = number != 0 ? number : bpf_get_socket_uid(skb);
  return 1;
}

/* A SYN this host DNATed (a service address) to another host, for which its sender holds a client
 * entry (the agent learnt that server at a first contact through the same DNAT): a node's pod's SYN
 * the tc program deferred past the DNAT, or a local socket's. Its fast SYN is recorded as a socket
 * would record it (fast_conns, `translated`), and it matches (1), so the rules let it by unqueued and
 * synpass_egress writes the option as it leaves the host. The socket never names that server (it
 * connected to the service address), so its sock_ops program could not. Without room for the option
 * beside the SYN's own, with data, or without an entry, it does not match, and the rules queue it.
 * Sent again, the fast SYN went unanswered: as a socket's would (client_fallback), the retransmit
 * takes the queue (which finds a socket's workload in fast_owners, left for it). */
SEC("socket")
int synpass_translated_syn(struct __sk_buff *skb) {
  struct routed_syn syn = {};
  __u32 now = 0;
  struct fast_config *cfg = vouched_routed_syn(skb, &syn, &now);
  if (!cfg) return 0;
  if (syn.option_bytes + FAST_SYN_OPT_LEN > MAX_OPTION_BYTES || syn.payload_bytes != 0) return 0;
  struct client_key client = {.port = syn.pair.port};
  if (!translated_owner(skb, cfg, &syn, &client)) return 0;
  __builtin_memcpy(client.address, syn.pair.server, 16);
  struct client_value *entry = bpf_map_lookup_elem(&fast_clients, &client);
  if (!entry || now >= entry->expires) return 0;
  struct sent_key key = {.isn = bpf_ntohl(syn.tcp.seq), .server_port = syn.pair.port};
  __builtin_memcpy(key.server, syn.pair.server, 16);
  struct conn_value *sent = bpf_map_lookup_elem(&fast_conns, &key);
  if (sent) {
    if (sent->translated && !sent->fallback) {
      sent->fallback = 1;
      count(FAST_SYN_FALLBACK);
    }
    return 0;
  }
  struct conn_value fresh = {.fast_id = entry->fast_id, .translated = 1, .owner_kind = client.owner_kind, .owner = client.owner};
  __builtin_memcpy(fresh.key, entry->key, 16);
  return bpf_map_update_elem(&fast_conns, &key, &fresh, BPF_NOEXIST) == 0;
}

/* ---- tc egress ---------------------------------------------------------------------- */

/* Writes the fast option after the options of a SYN that carries no data, as the sock_ops program
 * would have (the last FAST_SYN_OPT_LEN bytes of the header, where the server's tc program looks),
 * and mends the lengths and checksums; bpf_l4_csum_replace keeps an offloaded (partial) checksum
 * right as well as a full one. 0 when written; otherwise the SYN may be half-changed. */
static __always_inline int insert_fast_option(struct __sk_buff *skb, const struct parsed *p, const struct conn_value *sent, __u32 time) {
  __u32 tcp_offset = p->option_base - sizeof(struct tcphdr);
  __u32 header_bytes = sizeof(struct tcphdr) + p->option_bytes;
  __u32 end = p->option_base + p->option_bytes;
  if (p->option_bytes + FAST_SYN_OPT_LEN > MAX_OPTION_BYTES || skb->len != end) return -1;
  __u8 opt[FAST_SYN_OPT_LEN];
  fast_syn_option(opt, sent->key, sent->fast_id, time, bpf_ntohl(p->tcp.seq));
  if (bpf_skb_change_tail(skb, end + FAST_SYN_OPT_LEN, 0) < 0) return -1;
  if (bpf_skb_store_bytes(skb, end, opt, sizeof(opt), 0) < 0) return -1;
  __u32 check_at = tcp_offset + __builtin_offsetof(struct tcphdr, check);
  __s64 added = bpf_csum_diff(0, 0, (__be32 *)opt, sizeof(opt), 0);
  if (added < 0 || bpf_l4_csum_replace(skb, check_at, 0, (__u32)added, 0) < 0) return -1;
  /* The TCP length, in the pseudo-header. */
  __u16 old_length = bpf_htons(header_bytes), new_length = bpf_htons(header_bytes + FAST_SYN_OPT_LEN);
  if (bpf_l4_csum_replace(skb, check_at, old_length, new_length, BPF_F_PSEUDO_HDR | sizeof(__u16)) < 0) return -1;
  /* The data offset: the high nibble of the header's 13th byte, a checksummed 16-bit word. */
  __u8 word[2];
  if (bpf_skb_load_bytes(skb, tcp_offset + 12, word, sizeof(word)) < 0) return -1;
  __u16 old_word, new_word;
  __builtin_memcpy(&old_word, word, 2);
  word[0] = (__u8)(((header_bytes + FAST_SYN_OPT_LEN) / 4) << 4) | (word[0] & 0x0f);
  __builtin_memcpy(&new_word, word, 2);
  if (bpf_skb_store_bytes(skb, tcp_offset + 12, word, sizeof(word), 0) < 0) return -1;
  if (bpf_l4_csum_replace(skb, check_at, old_word, new_word, sizeof(__u16)) < 0) return -1;
  __be16 old_total, new_total;
  if (p->ipv4) {
    if (bpf_skb_load_bytes(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, tot_len), &old_total, sizeof(old_total)) < 0) return -1;
    new_total = bpf_htons(bpf_ntohs(old_total) + FAST_SYN_OPT_LEN);
    if (bpf_skb_store_bytes(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, tot_len), &new_total, sizeof(new_total), 0) < 0) return -1;
    return bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check), old_total, new_total, sizeof(__u16)) < 0 ? -1 : 0;
  }
  if (bpf_skb_load_bytes(skb, ETH_HLEN + __builtin_offsetof(struct ipv6hdr, payload_len), &old_total, sizeof(old_total)) < 0) return -1;
  new_total = bpf_htons(bpf_ntohs(old_total) + FAST_SYN_OPT_LEN);
  return bpf_skb_store_bytes(skb, ETH_HLEN + __builtin_offsetof(struct ipv6hdr, payload_len), &new_total, sizeof(new_total), 0) < 0 ? -1 : 0;
}

/* A SYN that synpass_translated_syn recorded, leaving the host: it gets its fast option here, after
 * the DNAT and any source NAT (the record is keyed by what those leave alone). Only SYNs the rules
 * marked judged are looked at: every other packet leaving costs one mark test. One the option
 * cannot be written into is dropped, and its retransmit takes the queue. */
SEC("tc")
int synpass_egress(struct __sk_buff *skb) {
  struct fast_config *cfg = config();
  if (!cfg || (skb->mark & cfg->judged_mark) == 0) return TC_ACT_OK;
  struct parsed p = {};
  if (!parse(skb, &p) || !p.tcp.syn || p.tcp.ack || p.tcp.rst) return TC_ACT_OK;
  struct sent_key key = {.isn = bpf_ntohl(p.tcp.seq), .server_port = bpf_ntohs(p.tcp.dest)};
  __builtin_memcpy(key.server, p.destination, 16);
  struct conn_value *sent = bpf_map_lookup_elem(&fast_conns, &key);
  if (!sent || !sent->translated || sent->fallback || sent->written) return TC_ACT_OK;
  sent->written = 1;
  if (insert_fast_option(skb, &p, sent, now_seconds(cfg)) != 0) {
    sent->fallback = 1;
    count(FAST_SYN_FALLBACK);
    return TC_ACT_SHOT;
  }
  count(FAST_SYN_SENT);
  return TC_ACT_OK;
}

/* ---- sock_ops ------------------------------------------------------------------------------ */

/* A 4-byte field read into a register that clang cannot trace back to the field. The context
 * allows only 4-byte reads of some fields, which clang would merge into one 8-byte read; and a
 * choice between two fields of one map value compiles to a choice of offsets, pointer
 * arithmetic the verifier refuses without CAP_PERFMON. */
#define READ_U32(field) ({ __u32 __v = (field); asm volatile("" : "+r"(__v)); __v; })

static __always_inline void copy_ip6(__u8 out[16], __u32 a, __u32 b, __u32 c, __u32 d) {
  __builtin_memcpy(out, &a, 4);
  __builtin_memcpy(out + 4, &b, 4);
  __builtin_memcpy(out + 8, &c, 4);
  __builtin_memcpy(out + 12, &d, 4);
}

static __always_inline void local_and_remote(const struct bpf_sock_ops *ops, __u8 local[16], __u8 remote[16]) {
  if (ops->family == AF_INET) {
    mapped_ipv4(local, ops->local_ip4);
    mapped_ipv4(remote, ops->remote_ip4);
  } else {
    copy_ip6(local, READ_U32(ops->local_ip6[0]), READ_U32(ops->local_ip6[1]), READ_U32(ops->local_ip6[2]), READ_U32(ops->local_ip6[3]));
    copy_ip6(remote, READ_U32(ops->remote_ip6[0]), READ_U32(ops->remote_ip6[1]), READ_U32(ops->remote_ip6[2]), READ_U32(ops->remote_ip6[3]));
  }
}

static __always_inline void set_mark(struct bpf_sock_ops *ops, __u32 mark) {
  bpf_setsockopt(ops, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
}

/* The socket's connection, local end first. */
static __always_inline void socket_flow(const struct bpf_sock_ops *ops, struct flow_key *key) {
  key->local_port = ops->local_port;
  key->remote_port = bpf_ntohl(ops->remote_port);
  local_and_remote(ops, key->local, key->remote);
}

/* Where the fast SYN of a socket is recorded (fast_conns): its server's end and its ISN. */
static __always_inline void socket_sent(const struct bpf_sock_ops *ops, __u32 isn, struct sent_key *key) {
  __u8 local[16];
  key->isn = isn;
  key->server_port = bpf_ntohl(ops->remote_port);
  local_and_remote(ops, local, key->server);
}

/* The workload a connect belongs to: the deepest configured cgroup among the calling process's
 * cgroup and its ancestors (a unit's or pod's processes may sit in sub-cgroups), else its uid.
 * sock_ops runs at connect() in the caller's context, so the current task is the socket's. */
static __always_inline void connect_owner(const struct fast_config *cfg, struct client_key *key) {
  key->owner_kind = OWNER_UID;
  key->owner = (__u32)bpf_get_current_uid_gid();
  if (cfg->workload_cgroups == 0) return;
  for (int level = 0; level < MAX_CGROUP_LEVELS; level++) {
    __u64 id = bpf_get_current_ancestor_cgroup_id(level);
    if (id == 0) break;
    __u32 *workload = bpf_map_lookup_elem(&fast_workloads, &id);
    if (workload) {
      key->owner_kind = OWNER_WORKLOAD;
      key->owner = *workload;
    }
  }
}

/* A socket of another network namespace, on a node: the pod whose address it connects from, if
 * any. */
static __always_inline int pod_owner(const struct fast_config *cfg, const __u8 local[16], struct client_key *key) {
  if (!cfg->routed_workloads) return 0;
  struct pod_key pod = {};
  __builtin_memcpy(pod.address, local, 16);
  __u32 *number = bpf_map_lookup_elem(&fast_pods, &pod);
  if (!number) return 0;
  key->owner_kind = OWNER_POD;
  key->owner = *number;
  return 1;
}

/* Tells the agent which cgroup workload a SYN on its way to the queue belongs to. */
static __always_inline void record_owner(const struct bpf_sock_ops *ops, __u32 isn, __u32 workload) {
  struct owner_key key = {.isn = isn, .local_port = ops->local_port};
  __u8 remote[16];
  local_and_remote(ops, key.local, remote);
  bpf_map_update_elem(&fast_owners, &key, &workload, BPF_ANY);
}

/* A workload's connect that goes to the queue: the SYN's ISN is not chosen yet, so the socket
 * asks for its SYN's option space, where it names the workload (name_owner). */
static __always_inline void name_at_syn(struct bpf_sock_ops *ops, __u32 workload) {
  struct bpf_sock *sk = ops->sk;
  if (!sk) return;
  struct sock_state_value *state = bpf_sk_storage_get(&fast_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state) return;
  state->state = SOCK_NAMING;
  state->workload = workload;
  bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

/* A connect from a workload that has a kernel-proven entry for this destination. */
static __always_inline void client_connect(struct bpf_sock_ops *ops, const struct fast_config *cfg, __u32 now) {
  if (ops->family != AF_INET && ops->family != AF_INET6) return;
  struct client_key key = {.port = bpf_ntohl(ops->remote_port)};
  connect_owner(cfg, &key);
  /* A uid names a workload of the agent's own network namespace: a socket of another one below
   * the cgroup is none of them, whatever its uid, but a pod's on a node, named by its address. A
   * configured workload cgroup names its sockets in any namespace (a container of its own). */
  __u8 local[16];
  local_and_remote(ops, local, key.address);
  if (key.owner_kind == OWNER_UID && bpf_get_netns_cookie(ops) != cfg->netns_cookie && !pod_owner(cfg, local, &key)) return;
  __u32 workload = key.owner_kind == OWNER_WORKLOAD ? key.owner : 0;
  struct client_value *entry = bpf_map_lookup_elem(&fast_clients, &key);
  /* An entry past its end sends this connect to the queue as first contact, agent or not. */
  if (entry && now >= entry->expires) entry = 0;
  if (!entry) {
    /* Where a DNAT of this host may send it to a server it holds an entry for, a uid's names
     * itself too (synpass_translated_syn). */
    if (workload != 0 || (key.owner_kind == OWNER_UID && cfg->name_uid_owners)) name_at_syn(ops, workload);
    if (cfg->untracked_mark != 0) {
      /* Conntrack follows this connection, whatever an earlier fast one on its ports left. */
      struct flow_key flow = {};
      socket_flow(ops, &flow);
      bpf_map_delete_elem(&fast_flows, &flow);
    }
    return;
  }
  struct bpf_sock *sk = ops->sk;
  if (!sk) return;
  struct sock_state_value *state = bpf_sk_storage_get(&fast_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!state) return;
  __u32 mark = 0;
  bpf_getsockopt(ops, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
  state->state = SOCK_FAST;
  state->original_mark = mark;
  state->fast_id = entry->fast_id;
  state->workload = workload;
  state->owner_kind = key.owner_kind;
  state->owner = key.owner;
  state->pod = key.owner_kind == OWNER_POD;
  __u32 untracked = READ_U32(cfg->track_new) ? 0 : READ_U32(cfg->untracked_mark), judged = READ_U32(cfg->client_mark);
  state->untracked = untracked != 0;
  __builtin_memcpy(state->key, entry->key, 16);
  /* The SYN leaves marked so that the egress rules do not queue it: where conntrack is skipped,
   * untracked, for which no rule jumps, and the socket keeps that mark (each change of a socket's
   * mark costs its next packet a route lookup); else client_mark, until client_after_syn. A pod's
   * is vouched for where it enters the node instead (vouch_pod_syn). */
  if (!state->pod) set_mark(ops, mark | (untracked != 0 ? untracked : judged));
  bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG);
}

static __always_inline struct sock_state_value *socket_state(struct bpf_sock_ops *ops) {
  struct bpf_sock *sk = ops->sk;
  if (!ops->is_fullsock || !sk) return 0;
  return bpf_sk_storage_get(&fast_sockets, sk, 0, 0);
}

static __always_inline struct sock_state_value *fast_socket(struct bpf_sock_ops *ops) {
  struct sock_state_value *state = socket_state(ops);
  return state && state->state == SOCK_FAST ? state : 0;
}

static __always_inline int client_syn(const struct bpf_sock_ops *ops) {
  return (ops->skb_tcp_flags & TCPHDR_SYN_ACK_MASK) == 0x02;
}

/* The fast option of the SYN the socket answers: its fast id and time. 0 when it has none. */
static __always_inline int syn_fast_option(struct bpf_sock_ops *ops, __u32 *fast_id, __u32 *time) {
  __u8 search[FAST_SYN_OPT_LEN] = {FAST_OPT_KIND, 4, FAST_OPT_EXID >> 8, FAST_OPT_EXID & 0xff};
  if (bpf_load_hdr_opt(ops, search, sizeof(search), BPF_LOAD_HDR_OPT_TCP_SYN) != FAST_SYN_OPT_LEN) return 0;
  *fast_id = read_be32(search + 4);
  *time = read_be32(search + 8);
  return 1;
}

/* The client's first packets after its fast SYN, where conntrack is kept (client_established
 * ends it sooner otherwise). The handshake's ACK leaves with the accept
 * marks, so the rules release the connection (no later packet of it walks them); the packet
 * after it gets the socket's own mark back, and the socket stops calling this program. Only real
 * packets count: the kernel also asks for option space with no packet (flags 0) to size MSS. */
static __always_inline void client_after_syn(struct bpf_sock_ops *ops, const struct fast_config *cfg) {
  if ((ops->skb_tcp_flags & 0x10) == 0) return;
  struct sock_state_value *state = socket_state(ops);
  if (!state) return;
  if (state->state == SOCK_FAST && ops->state == BPF_TCP_ESTABLISHED) {
    state->state = SOCK_RELEASING;
    if (!state->pod) set_mark(ops, state->original_mark | cfg->accept_mark);
  } else if (state->state == SOCK_RELEASING) {
    state->state = SOCK_DONE;
    if (!state->pod) set_mark(ops, state->original_mark);
    bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~(BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG));
  }
}

/* The SYN of a SOCK_NAMING socket is being built: snd_nxt is its ISN until it has left. The
 * socket asks for nothing more. */
static __always_inline void name_owner(struct bpf_sock_ops *ops, struct sock_state_value *state) {
  record_owner(ops, ops->snd_nxt, state->workload);
  state->state = SOCK_DONE;
  bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

static __always_inline void reserve_option(struct bpf_sock_ops *ops, const struct fast_config *cfg) {
  __u32 flags = ops->skb_tcp_flags & TCPHDR_SYN_ACK_MASK;
  if (flags == 0x02) {
    struct sock_state_value *state = socket_state(ops);
    if (state && state->state == SOCK_FAST) bpf_reserve_hdr_opt(ops, FAST_SYN_OPT_LEN, 0);
    else if (state && state->state == SOCK_NAMING) name_owner(ops, state);
  } else if (flags == 0x12) {
    __u32 fast_id, time;
    bpf_reserve_hdr_opt(ops, syn_fast_option(ops, &fast_id, &time) ? FAST_SYNACK_OPT_LEN : FAST_READY_OPT_LEN, 0);
  } else {
    client_after_syn(ops, cfg);
  }
}

static __always_inline void write_client_syn(struct bpf_sock_ops *ops, const struct fast_config *cfg, __u32 time) {
  struct sock_state_value *state = fast_socket(ops);
  if (!state) return;
  struct tcphdr *th = ops->skb_data;
  if ((void *)(th + 1) > ops->skb_data_end) return;
  __u32 isn = bpf_ntohl(th->seq);
  __u8 opt[FAST_SYN_OPT_LEN];
  fast_syn_option(opt, state->key, state->fast_id, time, isn);
  if (bpf_store_hdr_opt(ops, opt, sizeof(opt), 0) != 0) return;
  state->isn = isn;
  struct sent_key key = {};
  socket_sent(ops, isn, &key);
  struct flow_key flow = {};
  if (state->pod || state->untracked) socket_flow(ops, &flow);
  struct conn_value sent = {.fast_id = state->fast_id, .pod = state->pod, .untracked = (__u16)state->untracked};
  __builtin_memcpy(sent.key, state->key, 16);
  if (state->pod) {
    __builtin_memcpy(sent.client, flow.local, 16);
    sent.client_port = flow.local_port;
  }
  bpf_map_update_elem(&fast_conns, &key, &sent, BPF_ANY);
  if (state->untracked) {
    struct flow_value untracked = {.untracked = 1};
    bpf_map_update_elem(&fast_flows, &flow, &untracked, BPF_ANY);
    if (state->pod) {
      /* The pod's own segments enter the node from its link: tc meets them from the server's side. */
      struct flow_key inward = {};
      reverse_flow(&flow, &inward);
      bpf_map_update_elem(&fast_flows, &inward, &untracked, BPF_ANY);
    }
  }
  count(FAST_SYN_SENT);
}

static __always_inline void write_server_synack(struct bpf_sock_ops *ops) {
  __u32 fast_id, time;
  if (!syn_fast_option(ops, &fast_id, &time)) {
    __u8 ready[FAST_READY_OPT_LEN] = {FAST_OPT_KIND, FAST_READY_OPT_LEN, FAST_READY_EXID >> 8, FAST_READY_EXID & 0xff};
    bpf_store_hdr_opt(ops, ready, sizeof(ready), 0);
    return;
  }
  struct tcphdr *th = ops->skb_data;
  if ((void *)(th + 1) > ops->skb_data_end) return;
  __u32 client_isn = bpf_ntohl(th->ack_seq) - 1;
  struct server_key key = {.fast_id = fast_id, .port = ops->local_port};
  local_and_remote(ops, key.local, key.address);
  const __u8 *mac_key;
  __u32 retiring;
  struct server_value *entry = bpf_map_lookup_elem(&fast_servers, &key);
  if (entry) {
    mac_key = entry->key;
    retiring = entry->retiring;
  } else {
    /* A DNAT or redirect sent the SYN to this socket after the tc program proved it for the
     * address and port it named: the record of that proof, found by what the translation keeps. */
    struct replay_key seen = {.fast_id = fast_id, .isn = client_isn, .time = time};
    __builtin_memcpy(seen.address, key.address, 16);
    struct replay_value *proven = bpf_map_lookup_elem(&fast_replay, &seen);
    if (!proven) return;
    mac_key = proven->key;
    retiring = proven->retiring;
  }
  __u8 opt[FAST_SYNACK_OPT_LEN] = {FAST_OPT_KIND, FAST_SYNACK_OPT_LEN, FAST_OPT_EXID >> 8, FAST_OPT_EXID & 0xff};
  __u32 label = retiring ? LABEL_SYNACK_RETIRING : LABEL_SYNACK;
  write_be64(opt + 4, synack_mac(mac_key, label, fast_id, client_isn, bpf_ntohl(th->seq)));
  if (bpf_store_hdr_opt(ops, opt, sizeof(opt), 0) == 0) count(FAST_SYNACK_SIGNED);
}

/* A SYN-ACK sent again (the first was lost, or the client sent its SYN again) is built without
 * the SYN it answers, unless the listener keeps each SYN's headers: then its MAC can be written
 * all the same (write_server_synack reads the fast id from the SYN). The kernel frees them with
 * the connection they opened. */
static __always_inline void keep_syns(struct bpf_sock_ops *ops) {
  int one = 1;
  bpf_setsockopt(ops, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
}

/* The fast SYN went unanswered (a server that lost its entry, or plain loss): the retransmit
 * leaves without the option and unmarked, so the agent sends it as first contact. The record of
 * the fast SYN stays, marked, until the connection is established: if it was the answer that
 * was lost, the server's kernel answers the retransmit as it answered the fast SYN (judge_synack). */
static __always_inline void client_fallback(struct bpf_sock_ops *ops) {
  struct sock_state_value *state = fast_socket(ops);
  if (!state || ops->state != BPF_TCP_SYN_SENT) return;
  state->state = SOCK_FALLBACK;
  if (!state->pod) set_mark(ops, state->original_mark);
  if (state->workload != 0) record_owner(ops, state->isn, state->workload);
  struct sent_key sent = {};
  socket_sent(ops, state->isn, &sent);
  struct conn_value *conn = bpf_map_lookup_elem(&fast_conns, &sent);
  if (conn) conn->fallback = 1;
  struct flow_key flow = {};
  socket_flow(ops, &flow);
  bpf_map_delete_elem(&fast_flows, &flow);
  if (state->pod) {
    struct flow_key inward = {};
    reverse_flow(&flow, &inward);
    bpf_map_delete_elem(&fast_flows, &inward);
  }
  count(FAST_SYN_FALLBACK);
}

/* The SYN-ACK was proven (by tc; after a fallback, by tc or the agent) and accepted: the fast
 * SYN's record is no longer needed. If the server proved it under its previous keys, the entry
 * it came from goes too (retire_client). */
static __always_inline void client_established(struct bpf_sock_ops *ops, const struct fast_config *cfg) {
  struct sock_state_value *state = socket_state(ops);
  if (!state || (state->state != SOCK_FAST && state->state != SOCK_FALLBACK)) return;
  struct flow_key key = {};
  socket_flow(ops, &key);
  struct sent_key sent_at = {};
  socket_sent(ops, state->isn, &sent_at);
  struct conn_value *sent = bpf_map_lookup_elem(&fast_conns, &sent_at);
  if (sent && sent->retiring) {
    struct client_key client = {.port = key.remote_port, .owner_kind = (__u16)state->owner_kind, .owner = state->owner};
    __builtin_memcpy(client.address, key.remote, 16);
    retire_client(&client, state->fast_id, key.local, key.local_port);
  }
  bpf_map_delete_elem(&fast_conns, &sent_at);
  if (state->state == SOCK_FALLBACK) {
    /* Whoever answered the retransmit, the socket asks for nothing more. */
    state->state = SOCK_DONE;
    bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~(BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG));
  } else if (state->untracked || skip_conntrack_mark(cfg) != 0) {
    /* Where the fast path skips conntrack, no rule walks the connection's segments (they carry
     * untracked), so none needs the accept marks on its handshake ACK (client_after_syn): the
     * socket keeps the mark its SYN left with, its own and untracked (or gets it now, if it
     * connected before the agent chose to skip conntrack), and asks for nothing more. */
    state->state = SOCK_DONE;
    if (!state->pod && !state->untracked) set_mark(ops, state->original_mark | cfg->untracked_mark);
    bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~(BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG));
  }
}

/* A connection the server's tc program accepted as fast: its socket's packets leave untracked. */
static __always_inline void server_established(struct bpf_sock_ops *ops, const struct fast_config *cfg) {
  if (cfg->untracked_mark == 0) return;
  struct flow_key flow = {};
  socket_flow(ops, &flow);
  struct flow_value *judged = bpf_map_lookup_elem(&fast_flows, &flow);
  if (!judged || !judged->untracked) return;
  __u32 mark = 0;
  bpf_getsockopt(ops, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
  set_mark(ops, mark | cfg->untracked_mark);
}

SEC("sockops")
int synpass_sockops(struct bpf_sock_ops *ops) {
  struct fast_config *cfg = config();
  if (!cfg) return 1;
  /* The clock is read only where a callback judges by it: most callbacks of a connection do not. */
  __u32 now;
  switch (ops->op) {
    case BPF_SOCK_OPS_TCP_LISTEN_CB:
      /* Lets the listener's SYN-ACKs carry the server's MAC. */
      bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
      keep_syns(ops);
      break;
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      now = now_seconds(cfg);
      if (vouched(cfg, now)) client_connect(ops, cfg, now);
      break;
    case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
      if (vouched(cfg, now_seconds(cfg))) reserve_option(ops, cfg);
      break;
    case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
      now = now_seconds(cfg);
      if (!vouched(cfg, now)) break;
      if (client_syn(ops)) write_client_syn(ops, cfg, now);
      else if ((ops->skb_tcp_flags & TCPHDR_SYN_ACK_MASK) == 0x12) write_server_synack(ops);
      break;
    case BPF_SOCK_OPS_RTO_CB:
      client_fallback(ops);
      break;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      client_established(ops, cfg);
      break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
      /* The accepted socket inherits the listener's flags, but only the listener's SYN-ACKs carry
       * an option: without this every segment it sends would call the program twice. */
      bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
      server_established(ops, cfg);
      break;
  }
  return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
