#include "base/status.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace weft {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

Status::Status(StatusCode code, std::string message) {
  if (code != StatusCode::kOk) rep_ = std::make_shared<Rep>(Rep{code, std::move(message)});
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code()));
  out += ": ";
  out += rep_->message;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message();
  return Status(code(), std::move(msg));
}

#define WEFT_DEFINE_ERROR_(fn, code) \
  Status fn(std::string message) { return Status(StatusCode::code, std::move(message)); }
WEFT_DEFINE_ERROR_(InvalidArgumentError, kInvalidArgument)
WEFT_DEFINE_ERROR_(DeadlineExceededError, kDeadlineExceeded)
WEFT_DEFINE_ERROR_(NotFoundError, kNotFound)
WEFT_DEFINE_ERROR_(AlreadyExistsError, kAlreadyExists)
WEFT_DEFINE_ERROR_(PermissionDeniedError, kPermissionDenied)
WEFT_DEFINE_ERROR_(ResourceExhaustedError, kResourceExhausted)
WEFT_DEFINE_ERROR_(FailedPreconditionError, kFailedPrecondition)
WEFT_DEFINE_ERROR_(AbortedError, kAborted)
WEFT_DEFINE_ERROR_(OutOfRangeError, kOutOfRange)
WEFT_DEFINE_ERROR_(UnimplementedError, kUnimplemented)
WEFT_DEFINE_ERROR_(InternalError, kInternal)
WEFT_DEFINE_ERROR_(UnavailableError, kUnavailable)
WEFT_DEFINE_ERROR_(DataLossError, kDataLoss)
WEFT_DEFINE_ERROR_(UnauthenticatedError, kUnauthenticated)
WEFT_DEFINE_ERROR_(CancelledError, kCancelled)
#undef WEFT_DEFINE_ERROR_

Status ErrnoError(std::string_view what, int err) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  StatusCode code = StatusCode::kInternal;
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ECONNABORTED:
      code = StatusCode::kUnavailable;
      break;
    case ETIMEDOUT:
      code = StatusCode::kDeadlineExceeded;
      break;
    case ENOENT:
      code = StatusCode::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = StatusCode::kPermissionDenied;
      break;
    case EINVAL:
      code = StatusCode::kInvalidArgument;
      break;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      code = StatusCode::kResourceExhausted;
      break;
    case EEXIST:
    case EADDRINUSE:
      code = StatusCode::kAlreadyExists;
      break;
    default:
      break;
  }
  return Status(code, std::move(msg));
}

void DieOnBadResultAccess(const Status& status) {
  std::fprintf(stderr, "weft: fatal: value() on a Result holding %s\n", status.ToString().c_str());
  std::abort();
}

namespace internal_check {
void Fail(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "weft: fatal: check failed at %s:%d: %s\n", file, line, cond);
  std::abort();
}
}  // namespace internal_check

}  // namespace weft
