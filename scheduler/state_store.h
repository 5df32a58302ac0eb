// Durable scheduler state: jobs, their events and nodes in one SQLite file (WAL journal). The core
// (scheduler_core.h) writes every state change through Commit() before it acknowledges it, so a
// scheduler killed with SIGKILL and restarted finds every acknowledged job and event.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "scheduler/job_types.h"

struct sqlite3;
struct sqlite3_stmt;

namespace weft::scheduler {

// The writes of one core operation; applied atomically (one transaction).
struct WriteBatch {
  std::vector<const Job*> jobs;    // upserted; borrowed until Commit returns
  std::vector<JobEvent> events;    // inserted
  std::vector<const Node*> nodes;  // upserted; borrowed until Commit returns
  int64_t next_job_seq = -1;       // written when >= 0
  int64_t next_incarnation = -1;   // written when >= 0
  bool empty() const {
    return jobs.empty() && events.empty() && nodes.empty() && next_job_seq < 0 &&
           next_incarnation < 0;
  }
};

struct StateSnapshot {
  std::vector<Job> jobs;         // in submission order
  std::vector<JobEvent> events;  // by job, then seq
  std::vector<Node> nodes;       // in registration order
  int64_t next_job_seq = 1;
  int64_t next_incarnation = 1;
};

// One open database. Not thread-safe: the core calls it under its own lock. Errors: Unavailable
// when the file cannot be opened or written (the message carries SQLite's), DataLoss for rows
// that do not decode.
class StateStore {
 public:
  // Opens (creating) `path` in WAL mode. `synchronous_full`: fsync every commit (survives power
  // loss); otherwise the WAL is synced at checkpoints only, which still survives a killed process.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& path, bool synchronous_full);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  Result<StateSnapshot> Load();
  Status Commit(const WriteBatch& batch);
  const std::string& path() const { return path_; }

 private:
  StateStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  Status Exec(const char* sql);
  Status Prepare(const char* sql, sqlite3_stmt** stmt);
  Status Error(std::string_view what) const;

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* put_job_ = nullptr;
  sqlite3_stmt* put_event_ = nullptr;
  sqlite3_stmt* put_node_ = nullptr;
  sqlite3_stmt* put_meta_ = nullptr;
};

}  // namespace weft::scheduler
