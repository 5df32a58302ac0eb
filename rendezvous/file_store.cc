#include "rendezvous/file_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/hmac.h"
#include "base/env.h"
#include "base/socket_util.h"

namespace weft::rendezvous {

Result<std::unique_ptr<FileStore>> FileStore::Open(std::string dir) {
  if (dir.empty()) return InvalidArgumentError("file store needs a directory");
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      partial = dir.substr(0, i);
      if (!partial.empty() && mkdir(partial.c_str(), 0700) < 0 && errno != EEXIST) {
        return ErrnoError("file store: mkdir " + partial, errno);
      }
    }
  }
  return std::unique_ptr<FileStore>(new FileStore(std::move(dir)));
}

std::string FileStore::PathOf(std::string_view key) const {
  return dir_ + "/k_" + ToHex(key.data(), key.size());
}

Status FileStore::Set(std::string_view key, std::string_view value) {
  std::string path = PathOf(key);
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".tmp.%d.%lx", static_cast<int>(getpid()),
                static_cast<unsigned long>(std::hash<std::thread::id>()(std::this_thread::get_id())));
  std::string tmp = path + suffix;
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoError("file store: create " + tmp, errno);
  const char* p = value.data();
  size_t left = value.size();
  while (left > 0) {
    ssize_t n = write(fd.get(), p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("file store: write " + tmp, errno);
    p += n;
    left -= static_cast<size_t>(n);
  }
  fd.Reset();
  if (rename(tmp.c_str(), path.c_str()) < 0) return ErrnoError("file store: rename", errno);
  return Status::Ok();
}

Result<std::string> FileStore::ReadIfPresent(std::string_view key, bool* present) const {
  std::string path = PathOf(key);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      *present = false;
      return std::string();
    }
    return ErrnoError("file store: open " + path, errno);
  }
  *present = true;
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("file store: read " + path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::string> FileStore::Get(std::string_view key, Deadline deadline) {
  auto nap = std::chrono::milliseconds(1);
  while (true) {
    bool present = false;
    WEFT_ASSIGN_OR_RETURN(std::string v, ReadIfPresent(key, &present));
    if (present) return v;
    if (deadline.Expired()) {
      return DeadlineExceededError("key '" + std::string(key) + "' did not appear in " +
                                   Describe() + " in time");
    }
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(nap, deadline.Remaining()));
    nap = std::min(nap * 2, std::chrono::milliseconds(20));
  }
}

Result<int64_t> FileStore::Add(std::string_view key, int64_t delta) {
  std::string lock_path = dir_ + "/lock";
  UniqueFd lock(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return ErrnoError("file store: open " + lock_path, errno);
  while (flock(lock.get(), LOCK_EX) < 0) {
    if (errno != EINTR) return ErrnoError("file store: flock", errno);
  }
  bool present = false;
  WEFT_ASSIGN_OR_RETURN(std::string old, ReadIfPresent(key, &present));
  int64_t v = 0;
  if (present && !ParseInt(old, &v)) {
    return InvalidArgumentError("file store: value under '" + std::string(key) +
                                "' is not an integer");
  }
  v += delta;
  WEFT_RETURN_IF_ERROR(Set(key, std::to_string(v)));
  return v;  // the lock is released when `lock` closes
}

Result<bool> FileStore::Check(std::string_view key) {
  return access(PathOf(key).c_str(), F_OK) == 0;
}

Status FileStore::Delete(std::string_view key) {
  if (unlink(PathOf(key).c_str()) < 0 && errno != ENOENT) return ErrnoError("file store: unlink", errno);
  return Status::Ok();
}

}  // namespace weft::rendezvous
