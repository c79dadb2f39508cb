// Word from the kernel that this network namespace's netfilter ruleset changed: nf_tables sends
// a notification to the NFNLGRP_NFTABLES group for every committed change (iptables-nft's
// included), so the agent checks its rules when someone touches them instead of only every few
// seconds. Nothing is parsed: any notification, or one lost to a full socket buffer, is a change.
// The legacy iptables backend sends none; its rules are only polled.
#include "ruleset_events.h"

#include "readable_poll.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <string.h>
#include <sys/socket.h>

#include <string>
#include <vector>

namespace {

class RulesetEvents : public Napi::ObjectWrap<RulesetEvents> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RulesetEvents", {InstanceMethod("close", &RulesetEvents::Close)});
  }

  // new RulesetEvents(onChange(notifications, lost)); throws (with `errno`) when the kernel
  // refuses the subscription (EPERM without CAP_NET_ADMIN).
  explicit RulesetEvents(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RulesetEvents>(info), buffer_(kBufferBytes) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "new RulesetEvents(onChange)").ThrowAsJavaScriptException();
      return;
    }
    on_change_ = Napi::Persistent(info[0].As<Napi::Function>());
    socket_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (socket_ == nullptr) {
      Fail(env, "netlink socket", errno);
      return;
    }
    // Group numbers start at 1; the bind mask's bit n - 1 is group n (NFNLGRP_NFTABLES is 7).
    if (mnl_socket_bind(socket_, 1u << (NFNLGRP_NFTABLES - 1), MNL_SOCKET_AUTOPID) < 0) {
      Fail(env, "subscribe to nftables notifications", errno);
      return;
    }
    poll_.Start(env, mnl_socket_get_fd(socket_), [](void* self, int) { static_cast<RulesetEvents*>(self)->Drain(); }, this);
    Ref();  // the poll handle keeps this object alive until close()
  }

  ~RulesetEvents() override { Shutdown(); }

 private:
  // One notification is one rule, chain or table (a big iptables-restore sends thousands):
  // whatever a wake-up does not read stays for the next one, so a burst costs a few wake-ups and
  // one call into JavaScript each, never a backlog here.
  static constexpr size_t kBufferBytes = 64 * 1024;
  static constexpr int kMaxReadsPerWake = 64;

  void Fail(Napi::Env env, const std::string& what, int error) {
    if (socket_ != nullptr) {
      mnl_socket_close(socket_);
      socket_ = nullptr;
    }
    Napi::Error failure = Napi::Error::New(env, what + ": " + strerror(error));
    failure.Set("errno", Napi::Number::New(env, error));
    failure.ThrowAsJavaScriptException();
  }

  void Drain() {
    if (socket_ == nullptr) return;
    uint32_t notifications = 0;
    bool lost = false;
    for (int i = 0; i < kMaxReadsPerWake; i++) {
      ssize_t length = mnl_socket_recvfrom(socket_, buffer_.data(), buffer_.size());
      if (length < 0) {
        if (errno == ENOBUFS || errno == ENOSPC) {
          // The kernel dropped notifications it could not queue, or one did not fit the buffer
          // (read and discarded): either way there were changes.
          lost = true;
          continue;
        }
        break;  // EAGAIN: read out (anything else: the next wake-up tries again)
      }
      const struct nlmsghdr* message = reinterpret_cast<const struct nlmsghdr*>(buffer_.data());
      for (int left = static_cast<int>(length); mnl_nlmsg_ok(message, left); message = mnl_nlmsg_next(message, &left)) {
        if (NFNL_SUBSYS_ID(message->nlmsg_type) == NFNL_SUBSYS_NFTABLES) notifications++;
      }
    }
    if (notifications == 0 && !lost) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    on_change_.MakeCallback(Value(), {Napi::Number::New(env, notifications), Napi::Boolean::New(env, lost)});
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (poll_.Stop()) Unref();
    if (socket_ != nullptr) {
      mnl_socket_close(socket_);
      socket_ = nullptr;
    }
  }

  Napi::FunctionReference on_change_;
  struct mnl_socket* socket_ = nullptr;
  ReadablePoll poll_;
  std::vector<char> buffer_;
};

}  // namespace

void RegisterRulesetEvents(Napi::Env env, Napi::Object exports) {
  exports.Set("RulesetEvents", RulesetEvents::Define(env));
}
