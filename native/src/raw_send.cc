// Sends an IP packet whose header the caller wrote (IPPROTO_RAW: the kernel takes the header as
// it is, for IPv6 too since Linux 4.5), routed by its destination as any local packet is. One
// socket per family, opened at first use and kept: a refusal that needs a reset should not cost
// a socket() and a close() each.
#include "raw_send.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace {

int sockets[2] = {-1, -1};

int SocketFor(int family) {
  int& fd = sockets[family == AF_INET ? 0 : 1];
  if (fd < 0) fd = socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW);
  return fd;
}

// sendRawPacket(packet) -> undefined; throws (with `errno`) when the kernel refuses it.
// The family and destination come from the packet's own header.
Napi::Value SendRawPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "sendRawPacket(packet)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array packet = info[0].As<Napi::Uint8Array>();
  const unsigned char* bytes = packet.Data();
  size_t length = packet.ByteLength();
  int version = length > 0 ? bytes[0] >> 4 : 0;
  if (!((version == 4 && length >= 20) || (version == 6 && length >= 40))) {
    Napi::RangeError::New(env, "sendRawPacket: not a whole IPv4 or IPv6 header").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int family = version == 4 ? AF_INET : AF_INET6;
  struct sockaddr_storage to = {};
  socklen_t to_length;
  if (family == AF_INET) {
    struct sockaddr_in* v4 = reinterpret_cast<struct sockaddr_in*>(&to);
    v4->sin_family = AF_INET;
    memcpy(&v4->sin_addr, bytes + 16, 4);
    to_length = sizeof *v4;
  } else {
    struct sockaddr_in6* v6 = reinterpret_cast<struct sockaddr_in6*>(&to);
    v6->sin6_family = AF_INET6;
    memcpy(&v6->sin6_addr, bytes + 24, 16);
    to_length = sizeof *v6;
  }
  int fd = SocketFor(family);
  int error = 0;
  if (fd < 0) error = errno;
  else if (sendto(fd, bytes, length, 0, reinterpret_cast<struct sockaddr*>(&to), to_length) < 0) error = errno;
  if (error != 0) {
    Napi::Error e = Napi::Error::New(env, std::string("raw send: ") + strerror(error));
    e.Set("errno", Napi::Number::New(env, error));
    e.ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void RegisterRawSend(Napi::Env env, Napi::Object exports) {
  exports.Set("sendRawPacket", Napi::Function::New(env, SendRawPacket));
}
