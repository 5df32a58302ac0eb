// A rendezvous store in a directory on a shared file system (one file per key, written by
// rename so readers never see half a value; Add serialised with flock). Useful where no TCP
// port can be opened, e.g. a Slurm job with a shared home directory.
#pragma once

#include <memory>
#include <string>

#include "rendezvous/store.h"

namespace weft::rendezvous {

// Thread-safe and process-safe. Get polls with backoff (1 ms growing to 20 ms).
class FileStore : public Store {
 public:
  // Creates the directory when missing.
  static Result<std::unique_ptr<FileStore>> Open(std::string dir);
  Status Set(std::string_view key, std::string_view value) override;
  Result<std::string> Get(std::string_view key, Deadline deadline) override;
  Result<int64_t> Add(std::string_view key, int64_t delta) override;
  Result<bool> Check(std::string_view key) override;
  Status Delete(std::string_view key) override;
  std::string Describe() const override { return "file://" + dir_; }

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(std::string_view key) const;
  Result<std::string> ReadIfPresent(std::string_view key, bool* present) const;
  std::string dir_;
};

}  // namespace weft::rendezvous
