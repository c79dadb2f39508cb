// The kernel fast path's loader and map access, over libbpf (LGPL-2.1 OR BSD-2-Clause). The
// agent owns the programs: it loads native/build/fast_path.bpf.o, pins its maps and the
// sock_ops cgroup link under a directory of bpffs (so they outlive a crash of the agent, and
// `synpass agent cleanup` finds them), and, once it has filled the maps, attaches the sock_ops
// program to the cgroup and the tc ingress program to interfaces of its network namespace (tcx
// links, pinned beside the maps; a clsact filter on kernels before 6.6), with the tc egress
// program beside it (where it writes the fast option into a SYN the host DNATed). Map
// keys and values cross as byte buffers whose layouts native/bpf/fast_path.h defines.
#include "bpf_loader.h"

#include "../bpf/fast_path.h"
#include "readable_poll.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

// tc filter identity of our program on every interface: a fixed handle and priority, so that
// attach replaces our own filter and detach finds it without any state.
constexpr uint32_t kTcHandle = 0x5350;
constexpr uint32_t kTcPriority = 0x5350;
// tcx (Linux 6.6) runs the program straight from the device's ingress, without the clsact qdisc
// and its classifier, which cost a program that only passes 0.3-0.45% of the busy CPU of a bulk
// transfer here. libbpf 1.1's headers predate it: BPF_TCX_INGRESS and BPF_LINK_TYPE_TCX.
constexpr int kTcxIngress = 46;
constexpr int kTcxEgress = 47;
constexpr uint32_t kLinkTypeTcx = 11;
// A tcx link is pinned as <pin dir>/tcx_<interface> (ingress) or tcx_<interface>:egress (no
// interface name holds a colon), which keeps it attached past this process.
constexpr const char* kTcxPinPrefix = "tcx_";
constexpr const char* kTcxEgressPinSuffix = ":egress";
constexpr const char* kCgroupLink = "sockops_link";
// The programs iptables' bpf match runs after a DNAT (`-m bpf --object-pinned`): the rules hold
// them by these pins' paths, as they were when they went in.
constexpr const char* kServiceBackendPin = "service_backend";
constexpr const char* kTranslatedSynPin = "translated_syn";
constexpr const char* kMapNames[] = {"fast_config",    "fast_counters", "fast_clients",    "fast_conns",
                                     "fast_servers",   "fast_replay",   "fast_cloak",      "fast_excluded",
                                     "fast_events",    "fast_event_gate", "fast_sources",  "fast_flows",
                                     "fast_workloads", "fast_owners",   "fast_pods",       "fast_pod_pairs"};

// libbpf's warnings while a load runs on this thread, for the verifier's reason when the kernel
// refuses a program: libbpf then loads it again with the verifier's log and prints that log, whose
// last line before the "processed N insns" summary says why. Only the tail is kept: a log can
// run to megabytes. Anything libbpf says outside a CaptureLibbpf is dropped.
thread_local std::string* libbpf_capture = nullptr;
constexpr size_t kCaptureTail = 16384;

int CaptureLibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (libbpf_capture == nullptr || level == LIBBPF_DEBUG) return 0;
  va_list sizing;
  va_copy(sizing, args);
  int length = vsnprintf(nullptr, 0, format, sizing);
  va_end(sizing);
  if (length <= 0) return 0;
  std::string text(static_cast<size_t>(length) + 1, '\0');
  vsnprintf(text.data(), text.size(), format, args);
  text.resize(static_cast<size_t>(length));
  libbpf_capture->append(text);
  if (libbpf_capture->size() > kCaptureTail) libbpf_capture->erase(0, libbpf_capture->size() - kCaptureTail);
  return length;
}

class CaptureLibbpf {
 public:
  CaptureLibbpf() { libbpf_capture = &text_; }
  ~CaptureLibbpf() { libbpf_capture = nullptr; }
  CaptureLibbpf(const CaptureLibbpf&) = delete;
  CaptureLibbpf& operator=(const CaptureLibbpf&) = delete;

  // The verifier's reason for its refusal (the line before its summary), or "".
  std::string VerifierReason() const {
    size_t summary = text_.rfind("\nprocessed ");
    if (summary == std::string::npos) return "";
    size_t end = summary;
    while (end > 0 && text_[end - 1] == '\n') end--;
    size_t start = text_.rfind('\n', end == 0 ? 0 : end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    return start < end ? text_.substr(start, end - start) : "";
  }

 private:
  std::string text_;
};

// Blocks this thread's signals while the verifier runs, then lets the pending ones in. The
// verifier gives up with EAGAIN when a signal is pending, and libbpf's few retries meet the next
// one: under Node's CPU profiler (SIGPROF every 100 us on the main thread) no load ever passed.
// A process-wide signal (SIGTERM) goes to another thread meanwhile; a thread-directed one waits.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    blocked_ = pthread_sigmask(SIG_BLOCK, &all, &previous_) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t previous_;
  bool blocked_;
};

std::string ErrnoText(int error) {
  return std::string(strerror(error < 0 ? -error : error));
}

// "what: the errno's text", then the verifier's reason when it gave one.
std::string FailureText(const std::string& what, int error, const CaptureLibbpf* capture = nullptr) {
  std::string reason = capture == nullptr ? "" : capture->VerifierReason();
  return what + ": " + ErrnoText(error) + (reason.empty() ? "" : "; verifier: " + reason);
}

void ThrowErrno(Napi::Env env, const std::string& what, int error, const CaptureLibbpf* capture = nullptr) {
  Napi::Error failure = Napi::Error::New(env, FailureText(what, error, capture));
  failure.Set("errno", Napi::Number::New(env, error < 0 ? -error : error));
  failure.ThrowAsJavaScriptException();
}

// Whether the interface carries Ethernet frames: the tc program reads the L3 header at
// ETH_HLEN, so it attaches to nothing else.
bool IsEthernet(const char* name) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct ifreq request = {};
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  bool ether = ioctl(fd, SIOCGIFHWADDR, &request) == 0 && request.ifr_hwaddr.sa_family == ARPHRD_ETHER;
  close(fd);
  return ether;
}

struct TcTarget {
  std::string name;
  unsigned index;
};

std::vector<TcTarget> AllInterfaces() {
  std::vector<TcTarget> found;
  struct if_nameindex* list = if_nameindex();
  if (list == nullptr) return found;
  for (struct if_nameindex* it = list; it->if_index != 0; ++it) found.push_back({it->if_name, it->if_index});
  if_freenameindex(list);
  return found;
}

// Removes our filter from one interface's hook; absent is fine.
int DetachTc(unsigned index, enum bpf_tc_attach_point point) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(index), .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  int rc = bpf_tc_detach(&hook, &opts);
  return rc == -ENOENT || rc == -EINVAL ? 0 : rc;
}

struct Detached {
  uint32_t tc = 0;
  bool link = false;
};

Detached DetachAll(const std::string& pin_dir);

// A link a previous run pinned at `path` takes `program_fd` in one step (no moment without a
// program) when `in_place(link_fd)` says it sits where the new one should; any other link pinned
// there is detached and its pin removed. Whether it took the program.
template <typename InPlace>
bool TakeOverPinnedLink(const std::string& path, int program_fd, InPlace in_place) {
  int old_link = bpf_obj_get(path.c_str());
  if (old_link < 0) return false;
  bool took_over = in_place(old_link) && bpf_link_update(old_link, program_fd, nullptr) == 0;
  if (!took_over) bpf_link_detach(old_link);
  close(old_link);
  if (!took_over) unlink(path.c_str());
  return took_over;
}

// Pins a new link, which keeps its program attached once this process closes it, and closes it;
// a link that could not be pinned is detached. "" when pinned, else why not.
std::string PinLink(int link, const std::string& path) {
  int rc = bpf_obj_pin(link, path.c_str());
  int pin_error = rc != 0 ? errno : 0;
  if (rc != 0) bpf_link_detach(link);
  close(link);
  return rc == 0 ? "" : "pin " + path + ": " + ErrnoText(pin_error);
}

// Whether a pinned link is a tcx link on hook `attach_type` of interface `index` (not one left
// from an interface of the same name that went away).
bool TcxOn(int link_fd, unsigned index, int attach_type) {
  struct bpf_link_info link = {};
  uint32_t size = sizeof(link);
  if (bpf_obj_get_info_by_fd(link_fd, &link, &size) != 0 || link.type != kLinkTypeTcx) return false;
  // Not in libbpf 1.1's struct: a tcx link's ifindex and attach type open the info's union.
  struct {
    uint32_t ifindex;
    uint32_t attach_type;
  } tcx;
  memcpy(&tcx, &link.raw_tracepoint, sizeof(tcx));
  return tcx.ifindex == index && tcx.attach_type == static_cast<uint32_t>(attach_type);
}

// Our program on one hook of the interface as a pinned tcx link, taking over one a previous run
// kept there. "" when attached, else why not (a kernel without tcx refuses the link).
std::string AttachTcx(int program_fd, unsigned index, int attach_type, const std::string& pin_path) {
  if (TakeOverPinnedLink(pin_path, program_fd, [index, attach_type](int link) { return TcxOn(link, index, attach_type); })) return "";
  int link = bpf_link_create(program_fd, static_cast<int>(index), static_cast<enum bpf_attach_type>(attach_type), nullptr);
  if (link < 0) return "tcx: " + ErrnoText(link);
  return PinLink(link, pin_path);
}

// A tc program on one hook of interface `index`: "" when attached, else why not. A tcx link where
// the kernel has tcx, else a clsact filter.
std::string AttachHook(int program_fd, unsigned index, bool egress, const std::string& pin_path) {
  enum bpf_tc_attach_point point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
  std::string tcx_refused = AttachTcx(program_fd, index, egress ? kTcxEgress : kTcxIngress, pin_path);
  if (tcx_refused.empty()) {
    // A filter a run before tcx left would judge each packet a second time, from its own maps.
    DetachTc(index, point);
    return "";
  }
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(index), .attach_point = point);
  int rc = bpf_tc_hook_create(&hook);
  if (rc != 0 && rc != -EEXIST) return "clsact: " + ErrnoText(rc);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = program_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  rc = bpf_tc_attach(&hook, &opts);
  if (rc != 0) return tcx_refused + "; tc attach: " + ErrnoText(rc);
  return "";
}

// Our tc programs on one interface, ingress and egress. "" when attached, else why not.
std::string AttachInterfaceHooks(int program_fd, int egress_fd, const std::string& name, const std::string& pin_dir) {
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) return "no such interface";
  if (!IsEthernet(name.c_str())) return "not an Ethernet interface";
  std::string pin_path = pin_dir + "/" + kTcxPinPrefix + name;
  std::string refused = AttachHook(program_fd, index, false, pin_path);
  if (!refused.empty()) return refused;
  refused = AttachHook(egress_fd, index, true, pin_path + kTcxEgressPinSuffix);
  return refused.empty() ? "" : "egress: " + refused;
}

// Programs a previous run kept attached while no agent ran drop first-contact SYNs to cloaked
// ports (agent_away). Called once this agent's rules and queue are in place, before its own
// programs are loaded: until they are attached, the kept ones hand such SYNs to the rules again.
// A kept config of another layout (another version) is left alone.
void WelcomeBack(const std::string& pin_dir) {
  int fd = bpf_obj_get((pin_dir + "/fast_config").c_str());
  if (fd < 0) return;
  struct bpf_map_info info = {};
  uint32_t size = sizeof(info);
  uint32_t zero = 0;
  // Fields are only ever appended to struct fast_config, so a kept program of an older or newer
  // build has `agent_away` at the same offset, whatever its value's size (an upgrade).
  const size_t at = offsetof(struct fast_config, agent_away);
  // Nor do the kept programs defer a pod's SYN past the DNAT any more: the rules that judge it
  // there go in after this agent's own programs run.
  const size_t defer_at = offsetof(struct fast_config, defer_mark);
  unsigned char config[256] = {};
  if (bpf_obj_get_info_by_fd(fd, &info, &size) == 0 && info.value_size >= at + sizeof(uint32_t) &&
      info.value_size <= sizeof(config) && bpf_map_lookup_elem(fd, &zero, config) == 0) {
    uint32_t away = 0;
    uint32_t defer = 0;
    memcpy(&away, config + at, sizeof(away));
    bool defers = info.value_size >= defer_at + sizeof(uint32_t);
    if (defers) memcpy(&defer, config + defer_at, sizeof(defer));
    if (away != 0 || defer != 0) {
      memset(config + at, 0, sizeof(away));
      if (defers) memset(config + defer_at, 0, sizeof(defer));
      bpf_map_update_elem(fd, &zero, config, BPF_ANY);
    }
  }
  close(fd);
}

// fastPathLoad(objectPath, pinDir) -> { maps: {name: fd}, programFd, egressFd, sockopsFd }
// Loads the programs and pins their maps, attaching nothing: the agent fills the maps first
// (fastPathAttachPrograms comes after), so that the programs never judge with empty tables.
// Programs a previous run kept attached go on judging from their own maps meanwhile.
Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "fastPathLoad(objectPath, pinDir)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string object_path = info[0].As<Napi::String>();
  std::string pin_dir = info[1].As<Napi::String>();
  WelcomeBack(pin_dir);

  CaptureLibbpf capture;
  struct bpf_object* object = bpf_object__open_file(object_path.c_str(), nullptr);
  if (object == nullptr) {
    ThrowErrno(env, "open " + object_path, errno);
    return env.Undefined();
  }
  // Everything below runs with the object open; it is closed on every path out, after the
  // pins and the kept file descriptors hold what must stay. A failure undoes every pin.
  auto fail = [&](const std::string& what, int error) {
    bpf_object__close(object);
    DetachAll(pin_dir);
    ThrowErrno(env, what, error, &capture);
    return env.Undefined();
  };
  int rc;
  {
    SignalsBlocked quiet;
    rc = bpf_object__load(object);
  }
  if (rc != 0) return fail("load " + object_path + " (the kernel refused the programs)", rc);
  if (mkdir(pin_dir.c_str(), 0700) != 0 && errno != EEXIST) return fail("mkdir " + pin_dir, errno);
  for (const char* name : kMapNames) {
    struct bpf_map* map = bpf_object__find_map_by_name(object, name);
    if (map == nullptr) return fail(std::string("map ") + name + " missing from the object", ENOENT);
    std::string path = pin_dir + "/" + name;
    unlink(path.c_str());
    rc = bpf_map__pin(map, path.c_str());
    if (rc != 0) return fail("pin " + path, rc);
  }
  struct bpf_program* sockops = bpf_object__find_program_by_name(object, "synpass_sockops");
  struct bpf_program* ingress = bpf_object__find_program_by_name(object, "synpass_ingress");
  struct bpf_program* egress = bpf_object__find_program_by_name(object, "synpass_egress");
  struct bpf_program* service_backend = bpf_object__find_program_by_name(object, "synpass_service_backend");
  struct bpf_program* translated_syn = bpf_object__find_program_by_name(object, "synpass_translated_syn");
  if (sockops == nullptr || ingress == nullptr || egress == nullptr || service_backend == nullptr || translated_syn == nullptr) {
    return fail("programs missing from the object", ENOENT);
  }
  for (const auto& [program, pin] : {std::pair{service_backend, kServiceBackendPin}, std::pair{translated_syn, kTranslatedSynPin}}) {
    std::string path = pin_dir + "/" + pin;
    unlink(path.c_str());
    rc = bpf_program__pin(program, path.c_str());
    if (rc != 0) return fail("pin " + path, rc);
  }

  Napi::Object maps = Napi::Object::New(env);
  for (const char* name : kMapNames) {
    std::string path = pin_dir + "/" + name;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) return fail("open pinned " + path, errno);
    maps.Set(name, Napi::Number::New(env, fd));
  }
  int program_fd = fcntl(bpf_program__fd(ingress), F_DUPFD_CLOEXEC, 0);
  if (program_fd < 0) return fail("keep the tc program", errno);
  int egress_fd = fcntl(bpf_program__fd(egress), F_DUPFD_CLOEXEC, 0);
  if (egress_fd < 0) {
    close(program_fd);
    return fail("keep the tc egress program", errno);
  }
  int sockops_fd = fcntl(bpf_program__fd(sockops), F_DUPFD_CLOEXEC, 0);
  if (sockops_fd < 0) {
    close(program_fd);
    close(egress_fd);
    return fail("keep the sock_ops program", errno);
  }
  bpf_object__close(object);
  Napi::Object result = Napi::Object::New(env);
  result.Set("maps", maps);
  result.Set("programFd", Napi::Number::New(env, program_fd));
  result.Set("egressFd", Napi::Number::New(env, egress_fd));
  result.Set("sockopsFd", Napi::Number::New(env, sockops_fd));
  return result;
}

// Whether a pinned link is our sock_ops link on this very cgroup, so that it can take the new
// program in place.
bool SockopsLinkOn(int link_fd, const std::string& cgroup_path) {
  struct stat cgroup = {};
  if (stat(cgroup_path.c_str(), &cgroup) != 0) return false;
  struct bpf_link_info link = {};
  uint32_t size = sizeof(link);
  if (bpf_obj_get_info_by_fd(link_fd, &link, &size) != 0) return false;
  // A cgroup v2 directory's inode number is the cgroup id the kernel reports.
  return link.type == BPF_LINK_TYPE_CGROUP && link.cgroup.attach_type == BPF_CGROUP_SOCK_OPS &&
         link.cgroup.cgroup_id == static_cast<uint64_t>(cgroup.st_ino);
}

// The sock_ops program on the cgroup through the pinned link: a link a previous run kept on the
// same cgroup takes the new program in one step (no moment without a program; `took_over`); any
// other is replaced. "" when done, else why not.
std::string AttachSockops(int sockops_fd, const std::string& pin_dir, const std::string& cgroup_path, bool& took_over) {
  std::string link_path = pin_dir + "/" + kCgroupLink;
  took_over = TakeOverPinnedLink(link_path, sockops_fd, [&cgroup_path](int link) { return SockopsLinkOn(link, cgroup_path); });
  if (took_over) return "";
  int cgroup = open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup < 0) return "open cgroup " + cgroup_path + ": " + ErrnoText(errno);
  int link = bpf_link_create(sockops_fd, cgroup, BPF_CGROUP_SOCK_OPS, nullptr);
  int link_error = link < 0 ? errno : 0;
  close(cgroup);
  if (link < 0) return "attach sock_ops to " + cgroup_path + ": " + ErrnoText(link_error);
  return PinLink(link, link_path);
}

// fastPathAttachPrograms(pinDir, cgroupPath, sockopsFd, programFd, egressFd, interfaces[])
//   -> { attached: [], skipped: [{name, reason}], tookOver }
// tookOver: the sock_ops link a previous run kept took the new program in place.
// After fastPathLoad and the maps filled: sock_ops on the cgroup, tc on each interface, each
// replacing in place what a previous run kept. A sock_ops failure undoes everything.
Napi::Value AttachPrograms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsNumber() ||
      !info[4].IsNumber() || !info[5].IsArray()) {
    Napi::TypeError::New(env, "fastPathAttachPrograms(pinDir, cgroupPath, sockopsFd, programFd, egressFd, interfaces)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string pin_dir = info[0].As<Napi::String>();
  std::string cgroup_path = info[1].As<Napi::String>();
  int sockops_fd = info[2].As<Napi::Number>().Int32Value();
  int program_fd = info[3].As<Napi::Number>().Int32Value();
  int egress_fd = info[4].As<Napi::Number>().Int32Value();
  Napi::Array wanted = info[5].As<Napi::Array>();
  bool took_over = false;
  std::string refused = AttachSockops(sockops_fd, pin_dir, cgroup_path, took_over);
  if (!refused.empty()) {
    DetachAll(pin_dir);
    Napi::Error::New(env, refused).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array attached = Napi::Array::New(env);
  Napi::Array skipped = Napi::Array::New(env);
  for (uint32_t i = 0; i < wanted.Length(); i++) {
    std::string name = wanted.Get(i).As<Napi::String>();
    std::string reason = AttachInterfaceHooks(program_fd, egress_fd, name, pin_dir);
    if (reason.empty()) {
      attached.Set(attached.Length(), name);
      continue;
    }
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("name", name);
    entry.Set("reason", reason);
    skipped.Set(skipped.Length(), entry);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("attached", attached);
  result.Set("skipped", skipped);
  result.Set("tookOver", Napi::Boolean::New(env, took_over));
  return result;
}

// Our tcx links and tc filters off every interface of this namespace, the cgroup link detached,
// the pins removed: what stop, cleanup and a failed attach all undo.
Detached DetachAll(const std::string& pin_dir) {
  Detached done;
  if (DIR* pins = opendir(pin_dir.c_str())) {
    std::vector<std::string> tcx_pins;
    while (struct dirent* entry = readdir(pins)) {
      if (strncmp(entry->d_name, kTcxPinPrefix, strlen(kTcxPinPrefix)) == 0) tcx_pins.push_back(pin_dir + "/" + entry->d_name);
    }
    closedir(pins);
    for (const std::string& path : tcx_pins) {
      int link = bpf_obj_get(path.c_str());
      if (link >= 0) {
        if (bpf_link_detach(link) == 0) done.tc++;
        close(link);
      }
      unlink(path.c_str());
    }
  }
  for (const TcTarget& target : AllInterfaces()) {
    for (enum bpf_tc_attach_point point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
      LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(target.index), .attach_point = point);
      LIBBPF_OPTS(bpf_tc_opts, query, .handle = kTcHandle, .priority = kTcPriority);
      if (bpf_tc_query(&hook, &query) == 0 && DetachTc(target.index, point) == 0) done.tc++;
    }
  }
  std::string link_path = pin_dir + "/" + kCgroupLink;
  int link = bpf_obj_get(link_path.c_str());
  if (link >= 0) {
    done.link = bpf_link_detach(link) == 0;
    close(link);
  }
  unlink(link_path.c_str());
  unlink((pin_dir + "/" + kServiceBackendPin).c_str());
  unlink((pin_dir + "/" + kTranslatedSynPin).c_str());
  for (const char* name : kMapNames) unlink((pin_dir + "/" + name).c_str());
  rmdir(pin_dir.c_str());
  return done;
}

// fastPathAttachInterface(pinDir, programFd, egressFd, name) -> null when attached, else why not
// (a string).
Napi::Value AttachInterface(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsString()) {
    Napi::TypeError::New(env, "fastPathAttachInterface(pinDir, programFd, egressFd, name)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string reason = AttachInterfaceHooks(info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value(),
                                            info[3].As<Napi::String>(), info[0].As<Napi::String>());
  if (reason.empty()) return env.Null();
  return Napi::String::New(env, reason);
}

// fastPathDetach(pinDir) -> { tcDetached: number, linkDetached: boolean }
Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "fastPathDetach(pinDir)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Detached done = DetachAll(info[0].As<Napi::String>());
  Napi::Object result = Napi::Object::New(env);
  result.Set("tcDetached", Napi::Number::New(env, done.tc));
  result.Set("linkDetached", Napi::Boolean::New(env, done.link));
  return result;
}

// The listener sweep's kernel work, off the event loop: loading the iterator has libbpf read the
// kernel's BTF (about 50 ms), while the agent's queue is already bound and first contacts wait
// on that loop.
class SweepWorker : public Napi::AsyncWorker {
 public:
  SweepWorker(Napi::Env env, std::string object_path, std::string cgroup_path)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), object_path_(std::move(object_path)),
        cgroup_path_(std::move(cgroup_path)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    struct stat cgroup = {};
    if (stat(cgroup_path_.c_str(), &cgroup) != 0) return Fail("stat " + cgroup_path_, errno);
    CaptureLibbpf capture;
    struct bpf_object* object = bpf_object__open_file(object_path_.c_str(), nullptr);
    if (object == nullptr) return Fail("open " + object_path_, errno);
    struct bpf_link* link = nullptr;
    int iterator = -1;
    auto finish = [&]() {
      if (iterator >= 0) close(iterator);
      if (link != nullptr) bpf_link__destroy(link);
      bpf_object__close(object);
    };
    auto fail = [&](const std::string& what, int error) {
      finish();
      Fail(what, error, &capture);
    };
    int rc;
    {
      SignalsBlocked quiet;
      rc = bpf_object__load(object);
    }
    if (rc != 0) return fail("load " + object_path_, rc);
    struct bpf_map* target = bpf_object__find_map_by_name(object, "sweep_cgroup");
    struct bpf_program* program = bpf_object__find_program_by_name(object, "synpass_sweep_listeners");
    if (target == nullptr || program == nullptr) return fail("the sweep is missing from " + object_path_, ENOENT);
    // A cgroup v2 directory's inode number is the cgroup id the kernel reports.
    uint32_t zero = 0;
    uint64_t cgroup_id = static_cast<uint64_t>(cgroup.st_ino);
    if (bpf_map_update_elem(bpf_map__fd(target), &zero, &cgroup_id, BPF_ANY) != 0) return fail("sweep_cgroup", errno);
    link = bpf_program__attach_iter(program, nullptr);
    if (link == nullptr) return fail("attach the listener iterator", errno);
    iterator = bpf_iter_create(bpf_link__fd(link));
    if (iterator < 0) return fail("create the listener iterator", errno);
    uint8_t chunk[4096];
    for (;;) {
      ssize_t got = read(iterator, chunk, sizeof(chunk));
      if (got == 0) break;
      if (got < 0) {
        if (errno == EINTR) continue;
        return fail("read the listener iterator", errno);
      }
      records_.insert(records_.end(), chunk, chunk + got);
    }
    finish();
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array result = Napi::Array::New(env);
    for (size_t at = 0; at + sizeof(struct sweep_record) <= records_.size(); at += sizeof(struct sweep_record)) {
      struct sweep_record record;
      memcpy(&record, records_.data() + at, sizeof(record));
      Napi::Object listener = Napi::Object::New(env);
      listener.Set("port", Napi::Number::New(env, record.port));
      listener.Set("family", Napi::Number::New(env, record.family == AF_INET6 ? 6 : 4));
      listener.Set("outcome", Napi::Number::New(env, record.outcome));
      result.Set(result.Length(), listener);
    }
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& failure) override {
    failure.Set("errno", Napi::Number::New(Env(), error_));
    deferred_.Reject(failure.Value());
  }

 private:
  void Fail(const std::string& what, int error, const CaptureLibbpf* capture = nullptr) {
    error_ = error < 0 ? -error : error;
    SetError(FailureText(what, error, capture));
  }

  Napi::Promise::Deferred deferred_;
  std::string object_path_;
  std::string cgroup_path_;
  std::vector<uint8_t> records_;
  int error_ = 0;
};

// fastPathSweepListeners(objectPath, cgroupPath) -> Promise<[{ port, family, outcome }]>
// Runs the listener sweep (listener_sweep.bpf.c) once over this network namespace's TCP sockets,
// on a worker thread: every listener in the cgroup or below it gets its SYN-ACKs handed to the
// sock_ops program. Loaded, run and unloaded there; nothing stays. Rejects with the errno when
// the kernel refuses (EPERM without CAP_PERFMON).
Napi::Value SweepListeners(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "fastPathSweepListeners(objectPath, cgroupPath)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* worker = new SweepWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

bool BufferArgument(const Napi::Value& value) {
  return value.IsTypedArray();
}

void* BytesOf(const Napi::Value& value) {
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  return array.Data();
}

// mapUpdate(fd, key, value, flags): 0 or throws with errno (EEXIST, E2BIG for a full map).
Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !BufferArgument(info[1]) || !BufferArgument(info[2]) || !info[3].IsNumber()) {
    Napi::TypeError::New(env, "mapUpdate(fd, key, value, flags)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int rc = bpf_map_update_elem(info[0].As<Napi::Number>().Int32Value(), BytesOf(info[1]), BytesOf(info[2]),
                               info[3].As<Napi::Number>().Int64Value());
  if (rc != 0) ThrowErrno(env, "bpf map update", errno);
  return env.Undefined();
}

// mapDelete(fd, key): whether an entry was removed.
Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !BufferArgument(info[1])) {
    Napi::TypeError::New(env, "mapDelete(fd, key)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int rc = bpf_map_delete_elem(info[0].As<Napi::Number>().Int32Value(), BytesOf(info[1]));
  if (rc != 0 && errno != ENOENT) ThrowErrno(env, "bpf map delete", errno);
  return Napi::Boolean::New(env, rc == 0);
}

// (fd, key, valueOut) -> whether the key was present, its value written to valueOut by `read`.
Napi::Value ReadEntry(const Napi::CallbackInfo& info, const char* usage, const char* what,
                      int (*read)(int fd, const void* key, void* value)) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !BufferArgument(info[1]) || !BufferArgument(info[2])) {
    Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int rc = read(info[0].As<Napi::Number>().Int32Value(), BytesOf(info[1]), BytesOf(info[2]));
  if (rc != 0 && errno != ENOENT) ThrowErrno(env, what, errno);
  return Napi::Boolean::New(env, rc == 0);
}

// mapLookup(fd, key, valueOut): whether the key is present (its value written to valueOut).
Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  return ReadEntry(info, "mapLookup(fd, key, valueOut)", "bpf map lookup", bpf_map_lookup_elem);
}

// mapTake(fd, key, valueOut): mapLookup and mapDelete in one system call.
Napi::Value MapTake(const Napi::CallbackInfo& info) {
  return ReadEntry(info, "mapTake(fd, key, valueOut)", "bpf map lookup and delete", bpf_map_lookup_and_delete_elem);
}

// mapCount(fd, keySize): entries in a hash map, by walking its keys.
Napi::Value MapCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "mapCount(fd, keySize)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::vector<uint8_t> key(info[1].As<Napi::Number>().Uint32Value()), next(key.size());
  uint32_t entries = 0;
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, next.data()) == 0) {
    entries++;
    key.swap(next);
    previous = key.data();
  }
  return Napi::Number::New(env, entries);
}

// The entries of a batch: `count` keys of `key_size` bytes in `keys`, and values alike.
struct Batch {
  uint8_t* keys;
  uint8_t* values;
  uint32_t key_size;
  uint32_t value_size;
  uint32_t count;
};

// A batch from (fd, keys, keySize[, values, valueSize]) arguments, or a thrown TypeError/RangeError.
bool BatchArguments(const Napi::CallbackInfo& info, bool with_values, const char* usage, Batch& batch) {
  Napi::Env env = info.Env();
  size_t needed = with_values ? 5 : 3;
  if (info.Length() < needed || !info[0].IsNumber() || !BufferArgument(info[1]) || !info[2].IsNumber() ||
      (with_values && (!BufferArgument(info[3]) || !info[4].IsNumber()))) {
    Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
    return false;
  }
  Napi::Uint8Array keys = info[1].As<Napi::Uint8Array>();
  batch.keys = keys.Data();
  batch.key_size = info[2].As<Napi::Number>().Uint32Value();
  batch.count = batch.key_size == 0 ? 0 : static_cast<uint32_t>(keys.ByteLength() / batch.key_size);
  bool whole = batch.key_size != 0 && keys.ByteLength() % batch.key_size == 0;
  if (with_values) {
    Napi::Uint8Array values = info[3].As<Napi::Uint8Array>();
    batch.values = values.Data();
    batch.value_size = info[4].As<Napi::Number>().Uint32Value();
    whole = whole && values.ByteLength() == static_cast<size_t>(batch.count) * batch.value_size;
  }
  if (!whole) {
    Napi::RangeError::New(env, std::string(usage) + ": not a whole number of entries").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// Runs a batch call over entries [0, count) until all are done: `call(first, &processed)` covers
// entries from `first` and reports how many it did. An entry the kernel stops at with an errno
// `skippable` accepts is passed to `skipped` and passed over. Returns 0, or the errno that ended it.
template <typename Call, typename Skippable, typename Skipped>
int EachInBatches(uint32_t count, Call call, Skippable skippable, Skipped skipped) {
  uint32_t done = 0;
  while (done < count) {
    uint32_t processed = count - done;
    if (call(done, &processed) == 0) return 0;
    int error = errno;
    if (!skippable(error) || processed >= count - done) return error;
    skipped(done + processed);
    done += processed + 1;
  }
  return 0;
}

// mapWriteBatch(fd, keys, keySize, values, valueSize) -> refused indices: entry i is keys[i] ->
// values[i]; written in one system call (a call per entry costs about 15 us inside a busy agent,
// a second for a full table). The kernel stops at an entry it refuses (E2BIG: a full hash map):
// that one is skipped and reported, the rest written. Throws on any other error.
Napi::Value MapWriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Batch batch = {};
  if (!BatchArguments(info, true, "mapWriteBatch(fd, keys, keySize, values, valueSize)", batch)) return env.Undefined();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Array refused = Napi::Array::New(env);
  int error = EachInBatches(
      batch.count,
      [&](uint32_t first, uint32_t* processed) {
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        return bpf_map_update_batch(fd, batch.keys + static_cast<size_t>(first) * batch.key_size,
                                    batch.values + static_cast<size_t>(first) * batch.value_size, processed, &opts);
      },
      [](int errno_value) { return errno_value == E2BIG || errno_value == ENOMEM; },
      [&](uint32_t index) { refused.Set(refused.Length(), Napi::Number::New(env, index)); });
  if (error != 0) {
    ThrowErrno(env, "bpf map batch update", error);
    return env.Undefined();
  }
  return refused;
}

// mapDeleteBatch(fd, keys, keySize) -> entries deleted. Keys already absent (the kernel removed
// them, or they never were) are skipped. Throws on any other error.
Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Batch batch = {};
  if (!BatchArguments(info, false, "mapDeleteBatch(fd, keys, keySize)", batch)) return env.Undefined();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint32_t absent = 0;
  int error = EachInBatches(
      batch.count,
      [&](uint32_t first, uint32_t* processed) {
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        return bpf_map_delete_batch(fd, batch.keys + static_cast<size_t>(first) * batch.key_size, processed, &opts);
      },
      [](int errno_value) { return errno_value == ENOENT; }, [&](uint32_t) { absent++; });
  if (error != 0) {
    ThrowErrno(env, "bpf map batch delete", error);
    return env.Undefined();
  }
  return Napi::Number::New(env, batch.count - absent);
}

// counterTotals(fd, count): each slot of a per-CPU u64 array summed over the CPUs.
Napi::Value CounterTotals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "counterTotals(fd, count)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint32_t count = info[1].As<Napi::Number>().Uint32Value();
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) {
    ThrowErrno(env, "possible CPUs", cpus);
    return env.Undefined();
  }
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  Napi::Array totals = Napi::Array::New(env, count);
  for (uint32_t slot = 0; slot < count; slot++) {
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &slot, per_cpu.data()) == 0) {
      for (uint64_t value : per_cpu) sum += value;
    }
    totals.Set(slot, Napi::Number::New(env, static_cast<double>(sum)));
  }
  return totals;
}

// realtimeOffsetNs(): CLOCK_REALTIME minus CLOCK_BOOTTIME, as a BigInt. The kernel programs
// have only the boot clock; this offset turns it into the wall-clock time peers compare.
Napi::Value RealtimeOffset(const Napi::CallbackInfo& info) {
  struct timespec real, boot;
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t offset = (static_cast<int64_t>(real.tv_sec) - boot.tv_sec) * 1000000000LL + (real.tv_nsec - boot.tv_nsec);
  return Napi::BigInt::New(info.Env(), offset);
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// The cookie of this process's network namespace, as bpf_get_netns_cookie() gives it (Linux
// 5.14); 0 when the kernel cannot say.
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  uint64_t cookie = 0;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    socklen_t length = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0) cookie = 0;
    close(fd);
  }
  return Napi::BigInt::New(info.Env(), cookie);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// The fast path's event ring buffer, read on the event loop: when its epoll fd is readable,
// every waiting record is copied out and JavaScript gets them in one Buffer (records of one
// fixed size, struct fast_event). The kernel bounds the ring (and drops, counted, what does not
// fit); here at most kMaxDrainBytes go to JavaScript per wake-up, the rest waits for the next.
class KernelEvents : public Napi::ObjectWrap<KernelEvents> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KernelEvents", {InstanceMethod("close", &KernelEvents::Close)});
  }

  // new KernelEvents(ringFd, onEvents(buffer))
  explicit KernelEvents(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KernelEvents>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "new KernelEvents(ringFd, onEvents)").ThrowAsJavaScriptException();
      return;
    }
    on_events_ = Napi::Persistent(info[1].As<Napi::Function>());
    ring_ = ring_buffer__new(info[0].As<Napi::Number>().Int32Value(), &KernelEvents::Sample, this, nullptr);
    if (ring_ == nullptr) {
      ThrowErrno(env, "ring buffer", errno);
      return;
    }
    poll_.Start(env, ring_buffer__epoll_fd(ring_), [](void* self, int) { static_cast<KernelEvents*>(self)->Drain(); }, this);
    Ref();  // the poll handle keeps this object alive until close()
  }

  ~KernelEvents() override { Shutdown(); }

 private:
  static constexpr size_t kMaxDrainBytes = 1 << 20;

  static int Sample(void* context, void* data, size_t size) {
    auto* self = static_cast<KernelEvents*>(context);
    if (self->pending_.size() + size > kMaxDrainBytes) return 1;  // stop here; the rest waits
    const auto* bytes = static_cast<const uint8_t*>(data);
    self->pending_.insert(self->pending_.end(), bytes, bytes + size);
    return 0;
  }

  void Drain() {
    if (ring_ == nullptr) return;
    pending_.clear();
    ring_buffer__consume(ring_);
    if (pending_.empty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    on_events_.MakeCallback(Value(), {Napi::Buffer<uint8_t>::Copy(env, pending_.data(), pending_.size())});
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (poll_.Stop()) Unref();
    if (ring_ != nullptr) {
      ring_buffer__free(ring_);
      ring_ = nullptr;
    }
  }

  Napi::FunctionReference on_events_;
  struct ring_buffer* ring_ = nullptr;
  ReadablePoll poll_;
  std::vector<uint8_t> pending_;
};

}  // namespace

void RegisterFastPath(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(CaptureLibbpfPrint);
  exports.Set("KernelEvents", KernelEvents::Define(env));
  exports.Set("fastPathLoad", Napi::Function::New(env, Load));
  exports.Set("fastPathAttachPrograms", Napi::Function::New(env, AttachPrograms));
  exports.Set("fastPathDetach", Napi::Function::New(env, Detach));
  exports.Set("fastPathAttachInterface", Napi::Function::New(env, AttachInterface));
  exports.Set("fastPathSweepListeners", Napi::Function::New(env, SweepListeners));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapTake", Napi::Function::New(env, MapTake));
  exports.Set("mapCount", Napi::Function::New(env, MapCount));
  exports.Set("mapWriteBatch", Napi::Function::New(env, MapWriteBatch));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
  exports.Set("counterTotals", Napi::Function::New(env, CounterTotals));
  exports.Set("realtimeOffsetNs", Napi::Function::New(env, RealtimeOffset));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
}
