// synpass NFQUEUE binding: nfnetlink_queue spoken through libmnl (LGPL) so the project stays
// Apache-2.0. One netlink socket serves one or more queues. Packets are received with recvmmsg
// straight into buffers that JavaScript owns, so a batch reaches JS as offsets into memory it
// already holds: no per-packet allocation, no copy. Verdicts are appended to a libmnl batch and
// sent with one sendto per JS batch. The socket is read until it is empty before JS hears
// `onDrained`: a verdict's reinjection often queues the handshake's next packet to this same
// socket (a SYN accepted here makes the kernel send its SYN-ACK), and that packet should not
// wait behind bookkeeping.
#include <napi.h>

#include "bpf_loader.h"
#include "conntrack.h"
#include "raw_send.h"
#include "readable_poll.h"
#include "ruleset_events.h"
#include "curve25519.h"
#include "hmac.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

// Layout of one packet's metadata in the JS Uint32Array; exported by name (LAYOUT.meta) and checked
// against agent/src/native/addon.ts when the addon loads.
enum MetaField : uint32_t {
  kMetaPacketId = 0,
  kMetaQueue = 1,
  kMetaHook = 2,
  kMetaMark = 3,
  kMetaOffset = 4,
  kMetaLength = 5,
  kMetaOriginalLength = 6,
  kMetaFlags = 7,
  kMetaUid = 8,  // owner of the sending socket (locally generated packets), else kNoOwner
  kMetaGid = 9,
  kMetaStride = 10,
};

// Flag bits in kMetaFlags (low 16 bits); the link-layer protocol sits in the high 16 bits.
enum MetaFlag : uint32_t {
  kFlagChecksumPartial = 1u << 0,   // NFQA_SKB_CSUMNOTREADY: TCP checksum holds only the pseudo-header sum
  kFlagChecksumUnverified = 1u << 1, // NFQA_SKB_CSUM_NOTVERIFIED
  kFlagGso = 1u << 2,
  kFlagTruncated = 1u << 3,          // captured length < packet length
};

// Counter slots in the JS Float64Array. Exported by name (LAYOUT.counters), so the JS side
// (agent/src/native/addon.ts) checks its copy against this one when it loads the addon.
enum Counter : uint32_t {
  kReceived = 0,
  kBatches,
  kAccepted,
  kDropped,
  kRepeated,
  kRewritten,
  kOverruns,       // ENOBUFS: the kernel could not deliver to our socket, packets were lost
  kRecvErrors,
  kVerdictErrors,  // the kernel rejected a verdict message
  kSendErrors,
  kTruncated,
  kMalformed,
  kCounterCount,
};

constexpr size_t kSlotSize = 65536 + 1024;
constexpr uint32_t kNoOwner = 0xffffffffu;  // one full 64 KiB packet plus netlink headers
constexpr size_t kBatchLimit = 128 * 1024;

struct QueueConfig {
  uint16_t number;
};

class NfQueue : public Napi::ObjectWrap<NfQueue> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "NfQueue",
                                      {
                                          InstanceMethod("start", &NfQueue::Start),
                                          InstanceMethod("verdict", &NfQueue::Verdict),
                                          InstanceMethod("flush", &NfQueue::Flush),
                                          InstanceMethod("close", &NfQueue::Close),
                                      });
    exports.Set("NfQueue", ctor);
    exports.Set("SLOT_SIZE", Napi::Number::New(env, kSlotSize));
    exports.Set("META_STRIDE", Napi::Number::New(env, kMetaStride));
    exports.Set("COUNTER_COUNT", Napi::Number::New(env, kCounterCount));
    exports.Set("LAYOUT", Layout(env));
    return exports;
  }

  // The shared-memory layout by name: meta field positions, flag bits and counter slots.
  static Napi::Object Layout(Napi::Env env) {
    Napi::Object layout = Napi::Object::New(env);
    static const char* const kMetaNames[kMetaStride] = {"packetId", "queue", "hook", "mark", "offset",
                                                        "length", "originalLength", "flags", "uid", "gid"};
    Napi::Array meta = Napi::Array::New(env, kMetaStride);
    for (uint32_t i = 0; i < kMetaStride; i++) meta.Set(i, Napi::String::New(env, kMetaNames[i]));
    layout.Set("meta", meta);
    Napi::Object flags = Napi::Object::New(env);
    flags.Set("checksumPartial", Napi::Number::New(env, kFlagChecksumPartial));
    flags.Set("checksumUnverified", Napi::Number::New(env, kFlagChecksumUnverified));
    flags.Set("gso", Napi::Number::New(env, kFlagGso));
    flags.Set("truncated", Napi::Number::New(env, kFlagTruncated));
    layout.Set("flags", flags);
    static const char* const kCounterNames[kCounterCount] = {"received", "batches", "accepted", "dropped",
                                                             "repeated", "rewritten", "overruns", "recvErrors",
                                                             "verdictErrors", "sendErrors", "truncated", "malformed"};
    Napi::Array counters = Napi::Array::New(env, kCounterCount);
    for (uint32_t i = 0; i < kCounterCount; i++) counters.Set(i, Napi::String::New(env, kCounterNames[i]));
    layout.Set("counters", counters);
    layout.Set("noOwner", Napi::Number::New(env, kNoOwner));
    return layout;
  }

  explicit NfQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NfQueue>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "NfQueue(options): options object required").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object opts = info[0].As<Napi::Object>();
    Napi::Value queues = opts.Get("queues");
    if (!queues.IsArray() || queues.As<Napi::Array>().Length() == 0) {
      Napi::TypeError::New(env, "options.queues: non-empty array of queue numbers required")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Array arr = queues.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsNumber()) {
        Napi::TypeError::New(env, "options.queues: numbers only").ThrowAsJavaScriptException();
        return;
      }
      int64_t n = v.As<Napi::Number>().Int64Value();
      if (n < 0 || n > 65535) {
        Napi::RangeError::New(env, "options.queues: queue numbers are 0..65535").ThrowAsJavaScriptException();
        return;
      }
      queues_.push_back(QueueConfig{static_cast<uint16_t>(n)});
    }
    max_len_ = opts.Get("maxLength").IsNumber() ? opts.Get("maxLength").As<Napi::Number>().Uint32Value() : 4096;
    fail_open_ = opts.Get("failOpen").IsBoolean() && opts.Get("failOpen").As<Napi::Boolean>().Value();
    socket_buffer_ = opts.Get("socketBufferBytes").IsNumber()
                         ? opts.Get("socketBufferBytes").As<Napi::Number>().Uint32Value()
                         : 8 * 1024 * 1024;

    Napi::Value input = opts.Get("input");
    Napi::Value meta = opts.Get("meta");
    Napi::Value counters = opts.Get("counters");
    Napi::Value on_batch = opts.Get("onBatch");
    Napi::Value on_drained = opts.Get("onDrained");
    if (!input.IsTypedArray() || input.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        !meta.IsTypedArray() || meta.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        !counters.IsTypedArray() || counters.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        !on_batch.IsFunction() || !(on_drained.IsUndefined() || on_drained.IsFunction())) {
      Napi::TypeError::New(env, "options: input Uint8Array, meta Uint32Array, counters Float64Array and onBatch function required; onDrained a function if given")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Uint8Array in = input.As<Napi::Uint8Array>();
    Napi::Uint32Array me = meta.As<Napi::Uint32Array>();
    Napi::Float64Array co = counters.As<Napi::Float64Array>();
    slots_ = in.ByteLength() / kSlotSize;
    if (slots_ == 0 || me.ElementLength() < slots_ * kMetaStride || co.ElementLength() < kCounterCount) {
      Napi::RangeError::New(env, "options: input must hold at least one slot; meta and counters sized for it")
          .ThrowAsJavaScriptException();
      return;
    }
    if (slots_ > 64) slots_ = 64;
    input_ = in.Data();
    meta_ = me.Data();
    counters_ = co.Data();
    input_ref_ = Napi::Persistent(input.As<Napi::Object>());
    meta_ref_ = Napi::Persistent(meta.As<Napi::Object>());
    counters_ref_ = Napi::Persistent(counters.As<Napi::Object>());
    on_batch_ = Napi::Persistent(on_batch.As<Napi::Function>());
    if (on_drained.IsFunction()) on_drained_ = Napi::Persistent(on_drained.As<Napi::Function>());
    batch_buf_.resize(kBatchLimit * 2);
    msgs_.resize(slots_);
    iovs_.resize(slots_);
  }

  ~NfQueue() override {
    Shutdown();
    if (batch_ != nullptr) mnl_nlmsg_batch_stop(batch_);
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (nl_ != nullptr) return env.Undefined();
    nl_ = mnl_socket_open(NETLINK_NETFILTER);
    if (nl_ == nullptr) return ThrowErrno(env, "mnl_socket_open(NETLINK_NETFILTER)");
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return ThrowErrno(env, "mnl_socket_bind");
    portid_ = mnl_socket_get_portid(nl_);
    int fd = mnl_socket_get_fd(nl_);
    // Large receive buffer so a burst of handshakes does not overrun the socket (ENOBUFS).
    int size = static_cast<int>(socket_buffer_);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    for (const QueueConfig& q : queues_) {
      if (!Configure(q.number)) {
        std::string what = "bind queue " + std::to_string(q.number);
        return ThrowErrno(env, what.c_str());
      }
    }
    int flags = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    poll_.Start(env, fd, [](void* self, int status) { static_cast<NfQueue*>(self)->Drain(status); }, this);
    Ref();  // the poll handle keeps this object alive until close()
    return env.Undefined();
  }

  // verdict(packetId, queue, verdict, mark, payload?, payloadLength?)
  // mark < 0 leaves the packet mark as it is. The payload bytes are copied into the outgoing
  // batch at once, so the caller may reuse its buffer right after the call.
  Napi::Value Verdict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // A wrong argument is a bug on the JS side: refused by name, never cast into a verdict.
    if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
      Napi::TypeError::New(env, "verdict(id, queue, verdict, mark[, payload, length]): numbers expected").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    uint32_t queue = info[1].As<Napi::Number>().Uint32Value();
    uint32_t verdict = info[2].As<Napi::Number>().Uint32Value();
    int64_t mark = info[3].As<Napi::Number>().Int64Value();
    if (verdict != NF_DROP && verdict != NF_ACCEPT && verdict != NF_REPEAT) {
      Napi::RangeError::New(env, "verdict: not NF_DROP, NF_ACCEPT or NF_REPEAT").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (queue > 65535 || mark < 0 || mark > 0xffffffffLL) {
      Napi::RangeError::New(env, "verdict: queue or mark out of range").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const uint8_t* payload = nullptr;
    size_t payload_len = 0;
    if (info.Length() >= 5 && !info[4].IsUndefined()) {
      if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || info.Length() < 6 || !info[5].IsNumber()) {
        Napi::TypeError::New(env, "verdict: payload must be a Uint8Array with a length").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      Napi::Uint8Array p = info[4].As<Napi::Uint8Array>();
      payload_len = info[5].As<Napi::Number>().Uint32Value();
      if (payload_len > p.ByteLength() || payload_len > 65535) {
        Napi::RangeError::New(env, "verdict: payload length out of range").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      payload = p.Data();
    }
    if (nl_ == nullptr) {
      Napi::Error::New(env, "verdict: queue is not started").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    AppendVerdict(id, static_cast<uint16_t>(queue), verdict, mark, payload, payload_len);
    if (!in_batch_) SendBatch();
    return env.Undefined();
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    SendBatch();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (nl_ == nullptr) return;
    SendBatch();
    for (const QueueConfig& q : queues_) SendConfigCommand(q.number, NFQNL_CFG_CMD_UNBIND, false);
    if (poll_.Stop()) Unref();
    mnl_socket_close(nl_);
    nl_ = nullptr;
  }

  Napi::Value ThrowErrno(Napi::Env env, const char* what) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("syscall", Napi::String::New(env, what));
    if (nl_ != nullptr) {
      mnl_socket_close(nl_);
      nl_ = nullptr;
    }
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }

  struct nlmsghdr* PutQueueHeader(char* buf, uint16_t type, uint16_t queue) {
    struct nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    struct nfgenmsg* nfg = static_cast<struct nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct nfgenmsg)));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(queue);
    return nlh;
  }

  // Sends a config message and waits for the kernel's acknowledgement, so bind errors (EBUSY
  // when another process owns the queue, EPERM without CAP_NET_ADMIN) surface at start().
  bool SendAndAck(struct nlmsghdr* nlh) {
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = ++seq_;
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) return false;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(nl_, buf, sizeof buf);
      if (n < 0) return false;
      int ret = mnl_cb_run(buf, n, seq_, portid_, nullptr, nullptr);
      if (ret == MNL_CB_ERROR) return false;  // errno set by libmnl from the NLMSG_ERROR
      if (ret == MNL_CB_STOP) return true;
    }
  }

  bool SendConfigCommand(uint16_t queue, uint8_t command, bool ack) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr* nlh = PutQueueHeader(buf, NFQNL_MSG_CONFIG, queue);
    struct nfqnl_msg_config_cmd cmd = {};
    cmd.command = command;
    cmd.pf = htons(AF_INET);
    mnl_attr_put(nlh, NFQA_CFG_CMD, sizeof cmd, &cmd);
    if (ack) return SendAndAck(nlh);
    return mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) >= 0;
  }

  bool Configure(uint16_t queue) {
    if (!SendConfigCommand(queue, NFQNL_CFG_CMD_BIND, true)) return false;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr* nlh = PutQueueHeader(buf, NFQNL_MSG_CONFIG, queue);
    struct nfqnl_msg_config_params params = {};
    params.copy_range = htonl(0xffff);
    params.copy_mode = NFQNL_COPY_PACKET;
    mnl_attr_put(nlh, NFQA_CFG_PARAMS, sizeof params, &params);
    mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(max_len_));
    // GSO: the kernel hands over locally generated packets with their checksum still partial
    // instead of finishing it for us; the agent computes a full checksum whenever it rewrites.
    // UID_GID: the kernel reports the owner of the socket that sent a locally generated packet,
    // which is how the agent tells which local workload opens a connection.
    uint32_t flags = NFQA_CFG_F_GSO | NFQA_CFG_F_UID_GID | (fail_open_ ? NFQA_CFG_F_FAIL_OPEN : 0);
    uint32_t mask = NFQA_CFG_F_GSO | NFQA_CFG_F_UID_GID | NFQA_CFG_F_FAIL_OPEN;
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(mask));
    return SendAndAck(nlh);
  }

  void AppendVerdict(uint32_t id, uint16_t queue, uint32_t verdict, int64_t mark, const uint8_t* payload,
                     size_t payload_len) {
    if (batch_ == nullptr) batch_ = mnl_nlmsg_batch_start(batch_buf_.data(), kBatchLimit);
    struct nlmsghdr* nlh = PutQueueHeader(static_cast<char*>(mnl_nlmsg_batch_current(batch_)), NFQNL_MSG_VERDICT, queue);
    struct nfqnl_msg_verdict_hdr vh;
    vh.verdict = htonl(verdict);
    vh.id = htonl(id);
    mnl_attr_put(nlh, NFQA_VERDICT_HDR, sizeof vh, &vh);
    if (mark >= 0) mnl_attr_put_u32(nlh, NFQA_MARK, htonl(static_cast<uint32_t>(mark)));
    if (payload != nullptr) {
      mnl_attr_put(nlh, NFQA_PAYLOAD, payload_len, payload);
      counters_[kRewritten]++;
    }
    if (verdict == NF_DROP) counters_[kDropped]++;
    else if (verdict == NF_REPEAT) counters_[kRepeated]++;
    else counters_[kAccepted]++;
    if (!mnl_nlmsg_batch_next(batch_)) {
      // The last message did not fit: send what came before it; reset moves it to the front.
      SendRaw(mnl_nlmsg_batch_head(batch_), mnl_nlmsg_batch_size(batch_));
      mnl_nlmsg_batch_reset(batch_);
    }
  }

  void SendBatch() {
    if (batch_ == nullptr || mnl_nlmsg_batch_is_empty(batch_)) return;
    SendRaw(mnl_nlmsg_batch_head(batch_), mnl_nlmsg_batch_size(batch_));
    mnl_nlmsg_batch_reset(batch_);
  }

  void SendRaw(void* data, size_t len) {
    if (len == 0 || nl_ == nullptr) return;
    if (mnl_socket_sendto(nl_, data, len) < 0) counters_[kSendErrors]++;
  }

  void Drain(int status) {
    if (status < 0) {
      counters_[kRecvErrors]++;
      return;
    }
    int fd = mnl_socket_get_fd(nl_);
    bool delivered = false;
    // Bounded so one busy queue cannot starve the rest of the event loop; what is left wakes the
    // poll handle again (level-triggered).
    for (int round = 0; round < 8 && nl_ != nullptr; round++) {
      for (size_t i = 0; i < slots_; i++) {
        iovs_[i].iov_base = input_ + i * kSlotSize;
        iovs_[i].iov_len = kSlotSize;
        memset(&msgs_[i], 0, sizeof msgs_[i]);
        msgs_[i].msg_hdr.msg_iov = &iovs_[i];
        msgs_[i].msg_hdr.msg_iovlen = 1;
      }
      int n = recvmmsg(fd, msgs_.data(), slots_, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == ENOBUFS) {
          counters_[kOverruns]++;
          continue;
        }
        if (errno == EINTR) continue;
        counters_[kRecvErrors]++;
        break;
      }
      batch_count_ = 0;
      for (int i = 0; i < n; i++) {
        if (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
          counters_[kMalformed]++;
          continue;
        }
        RunCallbacks(input_ + i * kSlotSize, msgs_[i].msg_len);
      }
      if (batch_count_ > 0) {
        DeliverBatch();
        delivered = true;
      }
      // No early return on a short batch: the verdicts just sent may have queued more packets.
    }
    // No sched_yield here, though the task the verdicts just woke often waits on this CPU until
    // the agent sleeps: on an idle host yielding saved 25-40 us a connect, but beside a CPU-bound
    // process it handed that process a whole time slice and the agent, runnable rather than
    // woken, waited it out: +3 ms on the p50 (docs/protocol.md, "Costs").
    if (delivered && !on_drained_.IsEmpty() && nl_ != nullptr) {
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      on_drained_.MakeCallback(Value(), {});
    }
  }

  void DeliverBatch() {
    counters_[kBatches]++;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    in_batch_ = true;
    on_batch_.MakeCallback(Value(), {Napi::Number::New(env, batch_count_)});
    in_batch_ = false;
    SendBatch();
  }

  void RunCallbacks(const uint8_t* buf, size_t len) {
    static mnl_cb_t control[NLMSG_MIN_TYPE] = {
        nullptr, nullptr, OnError, nullptr,  // NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN
    };
    if (mnl_cb_run2(buf, len, 0, portid_, OnMessage, this, control, NLMSG_MIN_TYPE) == MNL_CB_ERROR) {
      counters_[kMalformed]++;
    }
  }

  static int OnMessage(const struct nlmsghdr* nlh, void* data) {
    return static_cast<NfQueue*>(data)->HandleMessage(nlh);
  }

  static int OnError(const struct nlmsghdr* nlh, void* data) {
    static_cast<NfQueue*>(data)->HandleVerdictError(nlh);
    return MNL_CB_OK;
  }

  int HandleMessage(const struct nlmsghdr* nlh) {
    if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_QUEUE || (nlh->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) {
      return MNL_CB_OK;
    }
    struct nlattr* tb[NFQA_MAX + 1] = {};
    if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), ParseAttr, tb) < 0 || tb[NFQA_PACKET_HDR] == nullptr) {
      counters_[kMalformed]++;
      return MNL_CB_OK;
    }
    const struct nfgenmsg* nfg = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    const struct nfqnl_msg_packet_hdr* ph =
        static_cast<const struct nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(tb[NFQA_PACKET_HDR]));
    counters_[kReceived]++;
    uint32_t* m = meta_ + batch_count_ * kMetaStride;
    m[kMetaPacketId] = ntohl(ph->packet_id);
    m[kMetaQueue] = ntohs(nfg->res_id);
    m[kMetaHook] = ph->hook;
    m[kMetaMark] = tb[NFQA_MARK] ? ntohl(mnl_attr_get_u32(tb[NFQA_MARK])) : 0;
    uint32_t flags = static_cast<uint32_t>(ntohs(ph->hw_protocol)) << 16;
    if (tb[NFQA_PAYLOAD] != nullptr) {
      const uint8_t* p = static_cast<const uint8_t*>(mnl_attr_get_payload(tb[NFQA_PAYLOAD]));
      m[kMetaOffset] = static_cast<uint32_t>(p - input_);
      m[kMetaLength] = mnl_attr_get_payload_len(tb[NFQA_PAYLOAD]);
    } else {
      m[kMetaOffset] = 0;
      m[kMetaLength] = 0;
    }
    m[kMetaOriginalLength] = tb[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(tb[NFQA_CAP_LEN])) : m[kMetaLength];
    if (m[kMetaOriginalLength] > m[kMetaLength]) {
      flags |= kFlagTruncated;
      counters_[kTruncated]++;
    }
    if (tb[NFQA_SKB_INFO] != nullptr) {
      uint32_t info = ntohl(mnl_attr_get_u32(tb[NFQA_SKB_INFO]));
      if (info & NFQA_SKB_CSUMNOTREADY) flags |= kFlagChecksumPartial;
      if (info & NFQA_SKB_CSUM_NOTVERIFIED) flags |= kFlagChecksumUnverified;
      if (info & NFQA_SKB_GSO) flags |= kFlagGso;
    }
    m[kMetaFlags] = flags;
    m[kMetaUid] = tb[NFQA_UID] ? ntohl(mnl_attr_get_u32(tb[NFQA_UID])) : kNoOwner;
    m[kMetaGid] = tb[NFQA_GID] ? ntohl(mnl_attr_get_u32(tb[NFQA_GID])) : kNoOwner;
    batch_count_++;
    return MNL_CB_OK;
  }

  // The kernel reports a rejected verdict (bad payload, unknown id) with an NLMSG_ERROR that
  // echoes our message. The packet would otherwise sit in the queue until it fills, so the
  // verdict is replaced by a plain drop.
  void HandleVerdictError(const struct nlmsghdr* nlh) {
    const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    if (err->error == 0) return;
    counters_[kVerdictErrors]++;
    const struct nlmsghdr* orig = &err->msg;
    if ((orig->nlmsg_type & 0xff) != NFQNL_MSG_VERDICT || orig->nlmsg_len > nlh->nlmsg_len) return;
    struct nlattr* tb[NFQA_MAX + 1] = {};
    if (mnl_attr_parse(orig, sizeof(struct nfgenmsg), ParseAttr, tb) < 0 || tb[NFQA_VERDICT_HDR] == nullptr) return;
    const struct nfgenmsg* nfg = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(orig));
    const struct nfqnl_msg_verdict_hdr* vh =
        static_cast<const struct nfqnl_msg_verdict_hdr*>(mnl_attr_get_payload(tb[NFQA_VERDICT_HDR]));
    if (ntohl(vh->verdict) == NF_DROP) return;  // a failed drop has nothing left to replace it
    AppendVerdict(ntohl(vh->id), ntohs(nfg->res_id), NF_DROP, -1, nullptr, 0);
  }

  static int ParseAttr(const struct nlattr* attr, void* data) {
    struct nlattr** tb = static_cast<struct nlattr**>(data);
    int type = mnl_attr_get_type(attr);
    if (mnl_attr_type_valid(attr, NFQA_MAX) < 0) return MNL_CB_OK;
    tb[type] = const_cast<struct nlattr*>(attr);
    return MNL_CB_OK;
  }

  std::vector<QueueConfig> queues_;
  uint32_t max_len_ = 4096;
  bool fail_open_ = false;
  uint32_t socket_buffer_ = 0;
  struct mnl_socket* nl_ = nullptr;
  unsigned int portid_ = 0;
  unsigned int seq_ = 0;
  ReadablePoll poll_;
  uint8_t* input_ = nullptr;
  uint32_t* meta_ = nullptr;
  double* counters_ = nullptr;
  size_t slots_ = 0;
  uint32_t batch_count_ = 0;
  bool in_batch_ = false;
  Napi::ObjectReference input_ref_;
  Napi::ObjectReference meta_ref_;
  Napi::ObjectReference counters_ref_;
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_drained_;
  std::vector<char> batch_buf_;
  struct mnl_nlmsg_batch* batch_ = nullptr;
  std::vector<struct mmsghdr> msgs_;
  std::vector<struct iovec> iovs_;
};

// Credentials of the process at the other end of a unix socket (SO_PEERCRED): the whois API
// answers only the owner of a connection, and Node has no API for this.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "peerCredentials(fd): fd required").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct ucred cred = {};
  socklen_t len = sizeof cred;
  if (getsockopt(info[0].As<Napi::Number>().Int32Value(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    Napi::Error e = Napi::Error::New(env, std::string("getsockopt(SO_PEERCRED): ") + strerror(errno));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials));
  RegisterHmac(env, exports);
  RegisterCurve25519(env, exports);
  RegisterConntrack(env, exports);
  RegisterRawSend(env, exports);
  RegisterRulesetEvents(env, exports);
  RegisterFastPath(env, exports);
  return NfQueue::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(synpass_nfq, InitModule)
