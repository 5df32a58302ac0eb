// SQLite persistence. Rows hold the core's own encoding (job_types.h) plus the columns needed to
// order and find them; one transaction per core operation keeps a job and its event consistent.
#include "scheduler/state_store.h"

#include <sqlite3.h>

namespace weft::scheduler {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  state INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS nodes (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
)sql";

}  // namespace

Status StateStore::Error(std::string_view what) const {
  return UnavailableError("scheduler state " + path_ + ": " + std::string(what) + ": " +
                          (db_ ? sqlite3_errmsg(db_) : "out of memory"));
}

Status StateStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return UnavailableError("scheduler state " + path_ + ": " + msg);
  }
  return Status::Ok();
}

Status StateStore::Prepare(const char* sql, sqlite3_stmt** stmt) {
  if (sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr) != SQLITE_OK) return Error("prepare");
  return Status::Ok();
}

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path,
                                                     bool synchronous_full) {
  if (path.empty()) return InvalidArgumentError("state database path: empty");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<StateStore> s(new StateStore(path, db));
  if (rc != SQLITE_OK) return s->Error("open");
  sqlite3_busy_timeout(db, 5000);
  WEFT_RETURN_IF_ERROR(s->Exec("PRAGMA journal_mode=WAL"));
  WEFT_RETURN_IF_ERROR(
      s->Exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
  WEFT_RETURN_IF_ERROR(s->Exec(kSchema));
  WEFT_RETURN_IF_ERROR(
      s->Prepare("INSERT INTO jobs(id, seq, state, data) VALUES(?1, ?2, ?3, ?4) "
                 "ON CONFLICT(id) DO UPDATE SET state=excluded.state, data=excluded.data",
                 &s->put_job_));
  WEFT_RETURN_IF_ERROR(s->Prepare(
      "INSERT OR REPLACE INTO events(job_id, seq, data) VALUES(?1, ?2, ?3)", &s->put_event_));
  WEFT_RETURN_IF_ERROR(
      s->Prepare("INSERT INTO nodes(id, seq, data) VALUES(?1, ?2, ?3) "
                 "ON CONFLICT(id) DO UPDATE SET data=excluded.data",
                 &s->put_node_));
  WEFT_RETURN_IF_ERROR(
      s->Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", &s->put_meta_));
  return s;
}

StateStore::~StateStore() {
  for (sqlite3_stmt* st : {put_job_, put_event_, put_node_, put_meta_}) sqlite3_finalize(st);
  sqlite3_close_v2(db_);
}

Result<StateSnapshot> StateStore::Load() {
  StateSnapshot snap;
  auto each_row = [&](const char* sql, auto&& fn) -> Status {
    sqlite3_stmt* st = nullptr;
    WEFT_RETURN_IF_ERROR(Prepare(sql, &st));
    Status status;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      status = fn(st);
      if (!status.ok()) break;
    }
    if (status.ok() && rc != SQLITE_DONE) status = Error("read");
    sqlite3_finalize(st);
    return status;
  };
  auto blob = [](sqlite3_stmt* st, int col) {
    return std::string_view(static_cast<const char*>(sqlite3_column_blob(st, col)),
                            static_cast<size_t>(sqlite3_column_bytes(st, col)));
  };
  WEFT_RETURN_IF_ERROR(each_row("SELECT data FROM jobs ORDER BY seq", [&](sqlite3_stmt* st) {
    WEFT_ASSIGN_OR_RETURN(Job j, DecodeJob(blob(st, 0)));
    snap.jobs.push_back(std::move(j));
    return Status::Ok();
  }));
  WEFT_RETURN_IF_ERROR(
      each_row("SELECT data FROM events ORDER BY job_id, seq", [&](sqlite3_stmt* st) {
        WEFT_ASSIGN_OR_RETURN(JobEvent e, DecodeEvent(blob(st, 0)));
        snap.events.push_back(std::move(e));
        return Status::Ok();
      }));
  WEFT_RETURN_IF_ERROR(each_row("SELECT data FROM nodes ORDER BY seq", [&](sqlite3_stmt* st) {
    WEFT_ASSIGN_OR_RETURN(Node n, DecodeNode(blob(st, 0)));
    snap.nodes.push_back(std::move(n));
    return Status::Ok();
  }));
  WEFT_RETURN_IF_ERROR(each_row("SELECT key, value FROM meta", [&](sqlite3_stmt* st) {
    std::string key = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    int64_t v = sqlite3_column_int64(st, 1);
    if (key == "next_job_seq") snap.next_job_seq = v;
    if (key == "next_incarnation") snap.next_incarnation = v;
    return Status::Ok();
  }));
  return snap;
}

Status StateStore::Commit(const WriteBatch& b) {
  if (b.empty()) return Status::Ok();
  WEFT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto run = [&](sqlite3_stmt* st) -> Status {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? Status::Ok() : Error("write");
  };
  Status status;
  for (const Job* j : b.jobs) {
    if (!status.ok()) break;
    std::string data = EncodeJob(*j);
    sqlite3_bind_text(put_job_, 1, j->id.data(), static_cast<int>(j->id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(put_job_, 2, j->seq);
    sqlite3_bind_int(put_job_, 3, static_cast<int>(j->state));
    sqlite3_bind_blob(put_job_, 4, data.data(), static_cast<int>(data.size()), SQLITE_TRANSIENT);
    status = run(put_job_);
  }
  for (const JobEvent& e : b.events) {
    if (!status.ok()) break;
    std::string data = EncodeEvent(e);
    sqlite3_bind_text(put_event_, 1, e.job_id.data(), static_cast<int>(e.job_id.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(put_event_, 2, e.seq);
    sqlite3_bind_blob(put_event_, 3, data.data(), static_cast<int>(data.size()), SQLITE_TRANSIENT);
    status = run(put_event_);
  }
  for (const Node* n : b.nodes) {
    if (!status.ok()) break;
    std::string data = EncodeNode(*n);
    sqlite3_bind_text(put_node_, 1, n->node_id.data(), static_cast<int>(n->node_id.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(put_node_, 2, n->register_seq);
    sqlite3_bind_blob(put_node_, 3, data.data(), static_cast<int>(data.size()), SQLITE_TRANSIENT);
    status = run(put_node_);
  }
  auto meta = [&](const char* key, int64_t v) {
    if (!status.ok() || v < 0) return;
    sqlite3_bind_text(put_meta_, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(put_meta_, 2, v);
    status = run(put_meta_);
  };
  meta("next_job_seq", b.next_job_seq);
  meta("next_incarnation", b.next_incarnation);
  if (!status.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return Exec("COMMIT");
}

}  // namespace weft::scheduler
