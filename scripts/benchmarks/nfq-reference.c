// The bench's floor for a user-space trip: the smallest C consumer of the agent's own rules and
// queue. One packet per recv, verdict NF_REPEAT with the marks pass-through sets (a pure SYN
// starts tracking, an ACK releases), no token and no rewrite. What the agent adds beyond this
// loop is its own cost; what this loop adds over no agents is the kernel's and the machine's.
//   nfq-reference <queue> <mark base>     (stops on SIGTERM/SIGINT, printing its packet counts)
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static struct mnl_socket *nl;
static uint16_t queue_number;
static uint32_t mark_pass, mark_track, mark_release, mark_all;
static volatile sig_atomic_t stopping;
// What it received, by kind: a handshake's SYN, SYN-ACK and payload-less ACK, and anything else
// (a data segment that raced its handshake's ACK through the queue before the release).
static unsigned long received, syns, syn_acks, acks, others;

static struct nlmsghdr *put_header(char *buf, uint16_t type) {
  struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
  nlh->nlmsg_flags = NLM_F_REQUEST;
  struct nfgenmsg *nfg = mnl_nlmsg_put_extra_header(nlh, sizeof *nfg);
  nfg->nfgen_family = AF_UNSPEC;
  nfg->version = NFNETLINK_V0;
  nfg->res_id = htons(queue_number);
  return nlh;
}

static int keep_attribute(const struct nlattr *attr, void *data) {
  const struct nlattr **tb = data;
  if (mnl_attr_type_valid(attr, NFQA_MAX) >= 0) tb[mnl_attr_get_type(attr)] = attr;
  return MNL_CB_OK;
}

static int on_packet(const struct nlmsghdr *nlh, void *data) {
  (void)data;
  struct nlattr *tb[NFQA_MAX + 1] = {0};
  if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), keep_attribute, tb) < 0 || tb[NFQA_PACKET_HDR] == NULL) return MNL_CB_OK;
  const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(tb[NFQA_PACKET_HDR]);
  // As the agent does: its four bits cleared, then `pass` and what the handshake step sets.
  uint32_t mark = ((tb[NFQA_MARK] ? ntohl(mnl_attr_get_u32(tb[NFQA_MARK])) : 0) & ~mark_all) | mark_pass;
  if (tb[NFQA_PAYLOAD] != NULL) {
    const uint8_t *ip = mnl_attr_get_payload(tb[NFQA_PAYLOAD]);
    uint16_t length = mnl_attr_get_payload_len(tb[NFQA_PAYLOAD]);
    unsigned header = (ip[0] & 0x0f) * 4;
    if ((ip[0] >> 4) == 4 && length >= header + 14) {
      uint8_t flags = ip[header + 13] & 0x12;  // SYN and ACK
      if (flags == 0x02) mark |= mark_track;
      if (flags == 0x10) mark |= mark_release;
      unsigned payload = length - header - (ip[header + 12] >> 4) * 4;
      if (flags == 0x02) syns++;
      else if (flags == 0x12) syn_acks++;
      else if (flags == 0x10 && payload == 0) acks++;
      else others++;
    } else {
      others++;
    }
  } else {
    others++;
  }
  received++;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  struct nlmsghdr *verdict = put_header(buf, NFQNL_MSG_VERDICT);
  struct nfqnl_msg_verdict_hdr header = {htonl(NF_REPEAT), ph->packet_id};
  mnl_attr_put(verdict, NFQA_VERDICT_HDR, sizeof header, &header);
  mnl_attr_put_u32(verdict, NFQA_MARK, htonl(mark));
  if (mnl_socket_sendto(nl, verdict, verdict->nlmsg_len) < 0) perror("nfq-reference: verdict");
  return MNL_CB_OK;
}

// Sends a config message and waits for the kernel's answer: a queue another process holds
// fails here, not silently.
static int send_acknowledged(struct nlmsghdr *nlh, char *buf, unsigned port) {
  static unsigned sequence;
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = ++sequence;
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) return -1;
  int n = mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
  return n < 0 ? -1 : mnl_cb_run(buf, (size_t)n, sequence, port, NULL, NULL);
}

static int configure(char *buf, unsigned port) {
  struct nlmsghdr *nlh = put_header(buf, NFQNL_MSG_CONFIG);
  struct nfqnl_msg_config_cmd command = {NFQNL_CFG_CMD_BIND, 0, htons(AF_INET)};
  mnl_attr_put(nlh, NFQA_CFG_CMD, sizeof command, &command);
  if (send_acknowledged(nlh, buf, port) < 0) return -1;
  nlh = put_header(buf, NFQNL_MSG_CONFIG);
  struct nfqnl_msg_config_params params = {htonl(0xffff), NFQNL_COPY_PACKET};
  mnl_attr_put(nlh, NFQA_CFG_PARAMS, sizeof params, &params);
  mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(4096));
  if (send_acknowledged(nlh, buf, port) < 0) return -1;
  int size = 8 << 20;
  return setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
}

static void stop(int signal) {
  (void)signal;
  stopping = 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: nfq-reference <queue> <mark base>\n");
    return 2;
  }
  queue_number = (uint16_t)strtoul(argv[1], NULL, 0);
  mark_pass = (uint32_t)strtoul(argv[2], NULL, 0);
  mark_track = mark_pass << 1;
  mark_release = mark_pass << 2;
  mark_all = mark_pass * 15;  // pass, track, release, judged (agent/src/datapath/marks.ts)
  // No SA_RESTART: the signal interrupts the blocking recv, which then sees `stopping`.
  struct sigaction action = {0};
  action.sa_handler = stop;
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  static char buf[0x10000 + 8192];  // one full packet plus netlink headers
  nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == NULL || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    perror("nfq-reference: netlink socket");
    return 1;
  }
  unsigned port = mnl_socket_get_portid(nl);
  if (configure(buf, port) < 0) {
    perror("nfq-reference: bind queue");
    return 1;
  }
  printf("{\"bound\":%u}\n", queue_number);
  fflush(stdout);
  while (!stopping) {
    int n = mnl_socket_recvfrom(nl, buf, sizeof buf);
    if (n < 0) {
      if (errno == ENOBUFS || errno == EINTR) continue;
      perror("nfq-reference: recv");
      return 1;
    }
    mnl_cb_run(buf, n, 0, port, on_packet, NULL);
  }
  printf("{\"received\":%lu,\"syn\":%lu,\"synAck\":%lu,\"ack\":%lu,\"other\":%lu}\n", received, syns, syn_acks, acks, others);
  mnl_socket_close(nl);
  return 0;
}
