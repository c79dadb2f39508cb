// One conntrack lookup over ctnetlink, for the whois API: a connection that a NAT on this host
// translates has its socket's addresses in one direction of its conntrack entry and the ones the
// agent saw in the handshake in the other.
#include "conntrack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include <string>

namespace {

struct Tuple {
  unsigned char source[16];
  unsigned char destination[16];
  uint16_t source_port;  // host order
  uint16_t destination_port;
  bool has_addresses = false;
  bool has_ports = false;
};

// The lookup's tuple, sent as the original direction: the kernel finds an entry by either of its
// directions' tuples, so one question covers both ends of a connection.
void PutLookupTuple(struct nlmsghdr* nlh, int family, const Tuple& tuple) {
  size_t length = family == AF_INET ? 4 : 16;
  struct nlattr* outer = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
  struct nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  mnl_attr_put(nlh, family == AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, length, tuple.source);
  mnl_attr_put(nlh, family == AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST, length, tuple.destination);
  mnl_attr_nest_end(nlh, ip);
  struct nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_TCP);
  mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(tuple.source_port));
  mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(tuple.destination_port));
  mnl_attr_nest_end(nlh, proto);
  mnl_attr_nest_end(nlh, outer);
}

int ReadIp(const struct nlattr* attr, void* data) {
  Tuple* tuple = static_cast<Tuple*>(data);
  uint16_t type = mnl_attr_get_type(attr);
  uint16_t length = mnl_attr_get_payload_len(attr);
  if ((type == CTA_IP_V4_SRC || type == CTA_IP_V4_DST) && length == 4) {
    memcpy(type == CTA_IP_V4_SRC ? tuple->source : tuple->destination, mnl_attr_get_payload(attr), 4);
  } else if ((type == CTA_IP_V6_SRC || type == CTA_IP_V6_DST) && length == 16) {
    memcpy(type == CTA_IP_V6_SRC ? tuple->source : tuple->destination, mnl_attr_get_payload(attr), 16);
  } else {
    return MNL_CB_OK;
  }
  tuple->has_addresses = true;
  return MNL_CB_OK;
}

int ReadProto(const struct nlattr* attr, void* data) {
  Tuple* tuple = static_cast<Tuple*>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if ((type != CTA_PROTO_SRC_PORT && type != CTA_PROTO_DST_PORT) || mnl_attr_validate(attr, MNL_TYPE_U16) < 0) return MNL_CB_OK;
  uint16_t port = ntohs(mnl_attr_get_u16(attr));
  (type == CTA_PROTO_SRC_PORT ? tuple->source_port : tuple->destination_port) = port;
  tuple->has_ports = true;
  return MNL_CB_OK;
}

int ReadTuple(const struct nlattr* attr, void* data) {
  Tuple* tuple = static_cast<Tuple*>(data);
  if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0) return MNL_CB_OK;
  if (mnl_attr_get_type(attr) == CTA_TUPLE_IP) mnl_attr_parse_nested(attr, ReadIp, tuple);
  if (mnl_attr_get_type(attr) == CTA_TUPLE_PROTO) mnl_attr_parse_nested(attr, ReadProto, tuple);
  return MNL_CB_OK;
}

struct Entry {
  Tuple original;
  Tuple reply;
  bool found = false;
};

int ReadEntryAttribute(const struct nlattr* attr, void* data) {
  Entry* entry = static_cast<Entry*>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if ((type != CTA_TUPLE_ORIG && type != CTA_TUPLE_REPLY) || mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0) return MNL_CB_OK;
  mnl_attr_parse_nested(attr, ReadTuple, type == CTA_TUPLE_ORIG ? &entry->original : &entry->reply);
  return MNL_CB_OK;
}

int ReadEntry(const struct nlmsghdr* nlh, void* data) {
  Entry* entry = static_cast<Entry*>(data);
  mnl_attr_parse(nlh, sizeof(struct nfgenmsg), ReadEntryAttribute, entry);
  entry->found = entry->original.has_addresses && entry->original.has_ports && entry->reply.has_addresses && entry->reply.has_ports;
  return MNL_CB_OK;
}

// The entry with `key` as either of its directions (the kernel looks a tuple up in both). 0 with
// `entry` filled, ENOENT when conntrack has none, else the errno.
int Lookup(int family, const Tuple& key, Entry* entry) {
  struct mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == nullptr) return errno;
  int error = 0;
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    error = errno;
    mnl_socket_close(nl);
    return error;
  }
  char buf[MNL_SOCKET_BUFFER_SIZE];
  struct nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = static_cast<uint32_t>(time(nullptr));
  struct nfgenmsg* nfg = static_cast<struct nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct nfgenmsg)));
  nfg->nfgen_family = static_cast<uint8_t>(family);
  nfg->version = NFNETLINK_V0;
  nfg->res_id = 0;
  PutLookupTuple(nlh, family, key);
  uint32_t seq = nlh->nlmsg_seq;
  uint32_t portid = mnl_socket_get_portid(nl);
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
    error = errno;
  } else {
    // The entry, then the acknowledgement; a missing entry answers with ENOENT instead.
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
      if (n < 0) {
        error = errno;
        break;
      }
      int rc = mnl_cb_run(buf, static_cast<size_t>(n), seq, portid, ReadEntry, entry);
      if (rc == MNL_CB_STOP) break;
      if (rc < 0) {
        error = errno;
        break;
      }
    }
  }
  mnl_socket_close(nl);
  return error;
}

Napi::Object TupleObject(Napi::Env env, int family, const Tuple& tuple) {
  size_t length = family == AF_INET ? 4 : 16;
  Napi::Object out = Napi::Object::New(env);
  out.Set("source", Napi::Buffer<unsigned char>::Copy(env, tuple.source, length));
  out.Set("sourcePort", Napi::Number::New(env, tuple.source_port));
  out.Set("destination", Napi::Buffer<unsigned char>::Copy(env, tuple.destination, length));
  out.Set("destinationPort", Napi::Number::New(env, tuple.destination_port));
  return out;
}

// conntrackEntry(family, source, sourcePort, destination, destinationPort) -> { original, reply } | null
// The TCP entry with this tuple as one of its two directions.
Napi::Value ConntrackEntry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsNumber() || !info[3].IsTypedArray() ||
      !info[4].IsNumber()) {
    Napi::TypeError::New(env, "conntrackEntry(family, source, sourcePort, destination, destinationPort)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int family = info[0].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  size_t length = family == AF_INET ? 4 : 16;
  Napi::Uint8Array source = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array destination = info[3].As<Napi::Uint8Array>();
  if (source.ByteLength() != length || destination.ByteLength() != length) {
    Napi::RangeError::New(env, "conntrackEntry: addresses of 4 (family 4) or 16 (family 6) bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Tuple key = {};
  memcpy(key.source, source.Data(), length);
  memcpy(key.destination, destination.Data(), length);
  key.source_port = static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value());
  key.destination_port = static_cast<uint16_t>(info[4].As<Napi::Number>().Uint32Value());
  Entry entry;
  int error = Lookup(family, key, &entry);
  if (error == ENOENT) return env.Null();
  if (error != 0) {
    Napi::Error e = Napi::Error::New(env, std::string("conntrack lookup: ") + strerror(error));
    e.Set("errno", Napi::Number::New(env, error));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!entry.found) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  result.Set("original", TupleObject(env, family, entry.original));
  result.Set("reply", TupleObject(env, family, entry.reply));
  return result;
}

}  // namespace

void RegisterConntrack(Napi::Env env, Napi::Object exports) {
  exports.Set("conntrackEntry", Napi::Function::New(env, ConntrackEntry));
}
