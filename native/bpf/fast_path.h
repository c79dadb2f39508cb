/* Layouts shared by the kernel programs (fast_path.bpf.c) and the agent, which writes the same
 * bytes from agent/src/datapath/kernel/maps.ts. Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d;
 * ports are in host byte order; keys are SipHash-2-4 keys (two little-endian 64-bit words).
 * Change a layout here and there together. */
#ifndef SYNPASS_FAST_PATH_H
#define SYNPASS_FAST_PATH_H

#include <linux/types.h>

/* RFC 6994 experimental option, kind 254, with our ExID. */
#define FAST_OPT_KIND 254
#define FAST_OPT_EXID 0xd351
/* SYN: kind, length, ExID, fast id (4), time (4, unix seconds), MAC (8). */
#define FAST_SYN_OPT_LEN 20
/* SYN-ACK: kind, length, ExID, MAC (8). */
#define FAST_SYNACK_OPT_LEN 12
/* SYN-ACK to any other SYN, from a listener this program serves: kind, length, ExID. It tells
 * the server's agent that this listener's kernel signs its answers to fast SYNs (a listener
 * opened before the programs were attached never calls them), so only then does it offer the
 * client the fast path (agent/src/datapath/packet.ts, KERNEL_READY_EXID). */
#define FAST_READY_EXID 0xd352
#define FAST_READY_OPT_LEN 4

struct fast_config {
  __s64 realtime_offset_ns; /* CLOCK_REALTIME minus CLOCK_BOOTTIME, kept current by the agent */
  __u32 window_seconds;     /* a fast SYN's time may be this far from the server's clock */
  __u32 accept_mark;        /* on an accepted fast SYN and the client's handshake ACK: the rules release the connection */
  __u32 client_mark;        /* on a fast SYN: the egress rules do not queue it */
  __u32 enabled;            /* 0 until the agent has filled this entry */
  __u32 accept_sample;      /* accepted fast SYNs reported as events: this many in 2^32 (0: none) */
  __u32 source_rate;        /* SYNs a second per source (IPv4 address, IPv6 /64) passed on to the queue; 0: no limit */
  __u32 budget_mark;        /* on a SYN charged to its source's bucket: the rules do not charge it again */
  __u32 untracked_mark;     /* on every packet of a connection the fast path judged: the raw table skips conntrack (0: off) */
  __u32 workload_cgroups;   /* entries in fast_workloads: 0 skips the cgroup walk at connect */
  __u32 source_burst;       /* SYNs a source's bucket holds, at most source_rate (one second's worth) */
  __u32 alive_until;        /* wall-clock second after which the programs judge nothing: the agent moves it on while it runs */
  __u32 agent_away;         /* set by an agent that stops and keeps the programs (failing closed): no one checks a first-contact marker */
  __u64 netns_cookie;       /* the agent's network namespace: only its sockets connect fast as their uid's workload; a pod's, in a namespace of its own, speaks as the pod (fast_pods) */
  __u32 routed_workloads;   /* what this host routes is its own to judge (a node's pods); otherwise only SYNs delivered here are */
  __u32 pod_mark;           /* on a local pod's fast SYN, vouched for where it enters the node: the rules let it by on both hooks */
  __u32 judged_mark;        /* on a fast SYN or SYN-ACK the kernel proved: with untracked_mark, the rules need not jump for it to mark it judged */
  __u32 defer_mark;         /* on a node, on a pod's SYN to a service address routed past the DNAT (fast_pod_pairs, deferred); 0 until the rules that take it are in */
  __u32 name_uid_owners;    /* this host translates its own output (a local DNAT): a uid's connect without an entry names itself in fast_owners too, so that synpass_translated_syn finds its owner after the DNAT */
  __u32 track_new;          /* NAT rules appeared after untracked_mark was set: connections judged from now on keep conntrack (a NAT rule applies only to tracked ones); untracked_mark still marks the later packets of those judged before */
};

/* One kernel verdict for the agent's flow log (ring buffer `fast_events`). A drop is reported
 * once a second per (source, cause); `folded` counts that pair's drops not reported since. Also a
 * client entry the kernel retired (FAST_CLIENT_RETIRED: source is the server, owner the entry's),
 * so the agent forgets it too. */
struct fast_event {
  __u32 counter; /* enum fast_counter: the verdict */
  __u32 fast_id;
  __u8 source[16];
  __u8 destination[16];
  __u16 source_port;
  __u16 destination_port;
  __u32 folded;
  __u32 owner_kind;
  __u32 owner;
};

/* Per (source, cause): the second of its last reported drop and drops folded since. */
struct event_gate_key {
  __u8 source[16];
  __u32 counter;
};
struct event_gate_value {
  __u64 second;
  __u32 folded;
  __u32 pad;
};

/* How a local connection's workload is named: by a configured cgroup it runs in (its workload
 * number, from 1), by the pod whose address it connects from (on a node), or else by its uid. */
#define OWNER_UID 0
#define OWNER_WORKLOAD 1
/* A pod of this node (in a network namespace of its own), by its number in fast_pods. */
#define OWNER_POD 2
/* The deepest cgroup level the connect-time walk looks at (the root is level 0). */
#define MAX_CGROUP_LEVELS 16

/* Client, on a node (fast_pods): a pod's address, which names the pod's sockets. */
struct pod_key {
  __u8 address[16];
};

/* On a node (fast_pod_pairs): two of its pods that its agent judged between them for a port (the
 * server pod's ingress, the client pod's egress), so the client pod's later SYNs to that port pass
 * where they enter the node. The source address names the pod, as on the queue path. */
struct pod_pair_key {
  __u8 client[16];
  __u8 server[16];
  __u16 port;
  __u16 pad;
};
struct pod_pair_value {
  __u32 expires;  /* wall-clock second from which the entry is void: the earlier end of the two pods' tokens */
  __u32 deferred; /* 1: `server` is a service address (or node port's address) the client pod reached a pod of this
                   * node or another host through, not a pod; its SYN there is judged after the DNAT (defer_mark),
                   * and this entry admits nothing itself */
};

/* Client: which destinations (address, port) a local workload may prove itself to in the kernel. */
struct client_key {
  __u8 address[16];
  __u16 port;
  __u16 owner_kind; /* OWNER_UID, OWNER_WORKLOAD or OWNER_POD */
  __u32 owner;      /* the uid, the workload number or the pod number */
};
struct client_value {
  __u32 fast_id;
  __u32 expires; /* wall-clock second from which the entry is void: the earliest end of the credentials and tokens it rests on */
  __u8 key[16];
};

/* One end's view of a connection, local end first: the key of fast_flows. */
struct flow_key {
  __u8 local[16];
  __u8 remote[16];
  __u16 local_port;
  __u16 remote_port;
};

/* Client (fast_owners): a local connection whose SYN goes to the queue, by what the agent reads
 * in that SYN and a destination NAT on the host's own output (a local service address) leaves
 * alone: the local address and port and the ISN. The socket knows the address before the NAT,
 * the agent sees the one after. */
struct owner_key {
  __u8 local[16];
  __u32 isn;
  __u16 local_port;
  __u16 pad;
};

/* Client (fast_conns): the fast SYN a local connection sent, so its SYN-ACK can be checked.
 * Keyed by what a source NAT between the socket and the server leaves alone: the server's
 * address and port and the client's ISN (the SYN-ACK acknowledges it). The local end is not in
 * the key: tc meets the SYN-ACK addressed to the NAT's address and port, before conntrack undoes
 * the translation, where the socket knows its own. */
struct sent_key {
  __u8 server[16];
  __u32 isn;
  __u16 server_port;
  __u16 pad;
};
struct conn_value {
  __u32 fast_id;
  __u8 key[16];
  __u32 retiring; /* the SYN-ACK proved the server's previous keys: the entry goes at establishment */
  __u32 fallback; /* the SYN was retransmitted to the queue (client_fallback): see judge_synack */
  __u32 pod;      /* a local pod sent it: where it enters the node, tc vouches for it (vouch_pod_syn) */
  __u8 client[16]; /* the pod's address and port, which that SYN must come from */
  __u16 client_port;
  __u16 untracked;  /* its SYN left untracked (skip_conntrack at connect): so does the rest of its handshake */
  __u32 translated; /* a SYN this host DNATed (a service address) to this server, of a local pod or socket: the tc
                     * egress program writes its option (synpass_translated_syn); conntrack keeps its connection */
  __u32 owner_kind; /* with translated: the client entry it took (its address and port are the key's) */
  __u32 owner;
  __u32 written;    /* with translated: the option is in (a SYN meets tc egress once per device it leaves by) */
};

/* Server: a peer workload proven at first contact, per local address and port. The local address
 * tells a node's pods apart: they share the node's agent and ports, not its policy. */
struct server_key {
  __u8 address[16];
  __u8 local[16];
  __u32 fast_id;
  __u16 port;
  __u16 pad;
};
struct server_value {
  __u8 key[16];
  __u32 allowed;  /* 0: policy says no (dropped as not-allowed) */
  __u32 retiring; /* 1: proven under this agent's previous keys; its SYN-ACKs tell the client so */
  __u32 expires;  /* wall-clock second from which the entry is void: the earliest end of the credentials and tokens it rests on */
  __u32 pad;
};

/* Server: fast SYNs already accepted, for the replay check. */
struct replay_key {
  __u8 address[16];
  __u32 fast_id;
  __u32 isn;
  __u32 time;
  __u32 pad;
};

/* What proved an accepted fast SYN: the server_value's key and whether it was retiring. The
 * SYN-ACK's MAC is written under it where the socket's own address and port name no entry (a
 * DNAT or redirect to a local listener after the tc program judged the SYN). */
struct replay_value {
  __u8 key[16];
  __u32 retiring;
};

/* A connection the fast path judged (fast_flows). */
struct flow_value {
  __u32 fast_id;     /* with proven_peer: the fast id the client's SYN proved (whois) */
  __u8 proven_peer;  /* 1 on the server's end */
  __u8 untracked;    /* its packets skip conntrack and the rules */
  __u16 pad;
};

/* Server: source networks the agent never touches (datapath excluded), an LPM trie. */
struct excluded_key {
  __u32 prefix_bits; /* of the 128-bit address (IPv4: 96 + prefix) */
  __u8 address[16];
};

/* Server: a source's token bucket for SYNs on their way to the queue. Key: the IPv4 address
 * (as ::ffff:a.b.c.d) or the IPv6 /64 (the rest zero). Credit is in billionths of a SYN. */
struct source_key {
  __u8 network[16];
};
struct source_bucket {
  __u64 credit;
  __u64 updated_ns;
};

/* Kernel verdict counters (a per-CPU array): the agent sums them into its metrics. */
enum fast_counter {
  FAST_SYN_ACCEPTED,       /* server: fast SYN proven and admitted */
  FAST_SYN_UNKNOWN,        /* server: fast SYN from a peer workload it holds no entry for */
  FAST_SYN_NOT_ALLOWED,    /* server: policy no longer admits that workload to the port */
  FAST_SYN_STALE,          /* server: time outside the window */
  FAST_SYN_BAD_PROOF,      /* server: MAC does not match */
  FAST_SYN_REPLAYED,       /* server: same (peer, id, ISN, time) seen before */
  FAST_SYNACK_VERIFIED,    /* client: SYN-ACK to a fast SYN carried the server's valid MAC */
  FAST_SYNACK_BAD_PROOF,   /* client: SYN-ACK to a fast SYN without the MAC, or a wrong one */
  FAST_SYN_SENT,           /* client: fast SYN written */
  FAST_SYN_FALLBACK,       /* client: a fast SYN went unanswered; the retransmit takes the queue */
  FAST_SYNACK_SIGNED,      /* server: MAC written into a SYN-ACK */
  FAST_SYN_NO_IDENTITY,    /* server: SYN without a fast option, and without a marker (or with one while the agent is away), to a port closed to peers without identity */
  FAST_EVENTS_LOST,        /* events the ring buffer had no room for (the verdicts are still counted) */
  FAST_SYN_SOURCE_LIMITED, /* server: SYN for the queue above its source's rate */
  FAST_CLIENT_RETIRED,     /* client: a server proved a fast SYN-ACK under its previous keys; the entry is dropped */
  FAST_POD_SYN_ACCEPTED,   /* node: a pod's SYN to another of its pods, a pair the agent judged for that port before */
  FAST_SERVICE_SYN_DEFERRED, /* node: a pod's SYN to a service address, left to the rules after the DNAT (not a verdict) */
  FAST_COUNTER_COUNT,
};

/* One listener the sweep (listener_sweep.bpf.c) met in the fast path's cgroup, as the iterator
 * writes it for the agent. */
enum sweep_outcome {
  SWEEP_ENABLED = 1,     /* its SYN-ACKs now call the sock_ops program */
  SWEEP_ALREADY = 2,     /* it began listening while the programs were attached (or an earlier sweep) */
  SWEEP_UNSUPPORTED = 3, /* the kernel lets no iterator read or set the flag (before Linux 6.12) */
};
struct sweep_record {
  __u16 port;
  __u16 family; /* AF_INET or AF_INET6 */
  __u32 outcome; /* enum sweep_outcome */
};

#endif
