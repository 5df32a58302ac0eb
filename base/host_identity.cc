#include "base/host_identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/env.h"
#include "base/hmac.h"

namespace weft {
namespace {

WEFT_ENV_KNOB(kHostIdKnob, "WEFT_HOST_ID", "",
              "override the host identity (ranks with equal ids use shared memory)");

std::string NamespaceInode(const char* path) {
  struct stat st;
  if (stat(path, &st) != 0) return "?";
  return std::to_string(static_cast<unsigned long long>(st.st_ino));
}

std::string Compute() {
  if (!kHostIdKnob.Get().empty()) return kHostIdKnob.Get();
  std::string boot;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot);
  if (boot.empty()) {
    char name[256] = {0};
    gethostname(name, sizeof(name) - 1);
    boot = name;
  }
  // The pid namespace too: shared memory needs the same IPC namespace, and peer liveness checks
  // (pidfd) need pids that mean the same process.
  std::string raw = boot + "/ipc:" + NamespaceInode("/proc/self/ns/ipc") +
                    "/net:" + NamespaceInode("/proc/self/ns/net") +
                    "/pid:" + NamespaceInode("/proc/self/ns/pid");
  Digest256 d = Sha256Of(raw);
  return ToHex(d.data(), 8);
}

}  // namespace

const std::string& HostIdentity() {
  static const std::string id = Compute();
  return id;
}

}  // namespace weft
