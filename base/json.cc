// JSON parsing and writing. The parser is recursive descent over a string_view with a depth cap
// (so hostile input cannot overflow the stack) and tracks line/column for error messages.
#include "base/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace weft {

Json::Json(Array a) : type_(Type::kArray), arr_(std::make_unique<Array>(std::move(a))) {}
Json::Json(Object o) : type_(Type::kObject), obj_(std::make_unique<Object>(std::move(o))) {}

Json::Json(const Json& other)
    : type_(other.type_), bool_(other.bool_), num_(other.num_), str_(other.str_) {
  if (other.arr_) arr_ = std::make_unique<Array>(*other.arr_);
  if (other.obj_) obj_ = std::make_unique<Object>(*other.obj_);
}

Json& Json::operator=(const Json& other) {
  if (this != &other) {
    Json copy(other);
    *this = std::move(copy);
  }
  return *this;
}

bool Json::as_bool() const {
  WEFT_CHECK(is_bool());
  return bool_;
}
double Json::as_number() const {
  WEFT_CHECK(is_number());
  return num_;
}
const std::string& Json::as_string() const {
  WEFT_CHECK(is_string());
  return str_;
}
const Json::Array& Json::as_array() const {
  WEFT_CHECK(is_array());
  return *arr_;
}
Json::Array& Json::as_array() {
  WEFT_CHECK(is_array());
  return *arr_;
}
const Json::Object& Json::as_object() const {
  WEFT_CHECK(is_object());
  return *obj_;
}
Json::Object& Json::as_object() {
  WEFT_CHECK(is_object());
  return *obj_;
}

void Json::Push(Json v) { as_array().push_back(std::move(v)); }
void Json::Set(std::string key, Json v) { as_object()[std::move(key)] = std::move(v); }

const Json* Json::Find(std::string_view key) const {
  if (!is_object()) return nullptr;
  auto it = obj_->find(key);
  return it == obj_->end() ? nullptr : &it->second;
}

namespace {
const char* TypeName(Json::Type t) {
  switch (t) {
    case Json::Type::kNull:
      return "null";
    case Json::Type::kBool:
      return "a boolean";
    case Json::Type::kNumber:
      return "a number";
    case Json::Type::kString:
      return "a string";
    case Json::Type::kArray:
      return "an array";
    case Json::Type::kObject:
      return "an object";
  }
  return "?";
}

Status Missing(std::string_view key, std::string_view what) {
  return InvalidArgumentError(std::string(what) + ": missing \"" + std::string(key) + "\"");
}
Status WrongType(std::string_view key, std::string_view what, const char* want, const Json& got) {
  return InvalidArgumentError(std::string(what) + ": \"" + std::string(key) + "\" must be " + want +
                              ", got " + TypeName(got.type()));
}
}  // namespace

Result<double> Json::GetNumber(std::string_view key, std::string_view what) const {
  const Json* v = Find(key);
  if (!v) return Missing(key, what);
  if (!v->is_number()) return WrongType(key, what, "a number", *v);
  return v->num_;
}

Result<int64_t> Json::GetInt(std::string_view key, std::string_view what) const {
  WEFT_ASSIGN_OR_RETURN(double d, GetNumber(key, what));
  if (d != std::floor(d) || std::fabs(d) > 9.0e15) {
    return InvalidArgumentError(std::string(what) + ": \"" + std::string(key) +
                                "\" must be an integer, got " + Json(d).Dump());
  }
  return static_cast<int64_t>(d);
}

Result<std::string> Json::GetString(std::string_view key, std::string_view what) const {
  const Json* v = Find(key);
  if (!v) return Missing(key, what);
  if (!v->is_string()) return WrongType(key, what, "a string", *v);
  return v->str_;
}

Result<const Json::Array*> Json::GetArray(std::string_view key, std::string_view what) const {
  const Json* v = Find(key);
  if (!v) return Missing(key, what);
  if (!v->is_array()) return WrongType(key, what, "an array", *v);
  return v->arr_.get();
}

double Json::NumberOr(std::string_view key, double def) const {
  const Json* v = Find(key);
  return v && v->is_number() ? v->num_ : def;
}

std::string Json::StringOr(std::string_view key, std::string def) const {
  const Json* v = Find(key);
  return v && v->is_string() ? v->str_ : def;
}

bool operator==(const Json& a, const Json& b) {
  if (a.type_ != b.type_) return false;
  switch (a.type_) {
    case Json::Type::kNull:
      return true;
    case Json::Type::kBool:
      return a.bool_ == b.bool_;
    case Json::Type::kNumber:
      return a.num_ == b.num_;
    case Json::Type::kString:
      return a.str_ == b.str_;
    case Json::Type::kArray:
      return *a.arr_ == *b.arr_;
    case Json::Type::kObject:
      return *a.obj_ == *b.obj_;
  }
  return false;
}

// ---- writer ----

namespace {
void EscapeTo(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void NumberTo(std::string& out, double d) {
  // JSON has no NaN/Infinity; null is what most writers emit for them.
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[32];
  if (d == std::floor(d) && std::fabs(d) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", d);
  } else {
    // The shortest of %.15g/%.16g/%.17g that reads back exactly.
    for (int digits = 15; digits <= 17; ++digits) {
      std::snprintf(buf, sizeof(buf), "%.*g", digits, d);
      if (std::strtod(buf, nullptr) == d) break;
    }
  }
  out += buf;
}

void Newline(std::string& out, int indent, int depth) {
  if (indent < 0) return;
  out += '\n';
  out.append(static_cast<size_t>(indent * depth), ' ');
}
}  // namespace

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  EscapeTo(out, s);
  return out;
}

void Json::DumpTo(std::string& out, int indent, int depth) const {
  switch (type_) {
    case Type::kNull:
      out += "null";
      return;
    case Type::kBool:
      out += bool_ ? "true" : "false";
      return;
    case Type::kNumber:
      NumberTo(out, num_);
      return;
    case Type::kString:
      EscapeTo(out, str_);
      return;
    case Type::kArray: {
      if (arr_->empty()) {
        out += "[]";
        return;
      }
      // Arrays of scalars stay on one line: plans hold many short number lists.
      bool flat = true;
      for (const Json& v : *arr_) flat = flat && !v.is_array() && !v.is_object();
      out += '[';
      for (size_t i = 0; i < arr_->size(); ++i) {
        if (i) out += indent >= 0 && flat ? ", " : ",";
        if (!flat) Newline(out, indent, depth + 1);
        (*arr_)[i].DumpTo(out, indent, depth + 1);
      }
      if (!flat) Newline(out, indent, depth);
      out += ']';
      return;
    }
    case Type::kObject: {
      if (obj_->empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, v] : *obj_) {
        if (!first) out += ',';
        first = false;
        Newline(out, indent, depth + 1);
        EscapeTo(out, k);
        out += indent >= 0 ? ": " : ":";
        v.DumpTo(out, indent, depth + 1);
      }
      Newline(out, indent, depth);
      out += '}';
      return;
    }
  }
}

std::string Json::Dump(int indent) const {
  std::string out;
  DumpTo(out, indent, 0);
  return out;
}

// ---- parser ----

namespace {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Result<Json> ParseDocument() {
    SkipSpace();
    WEFT_ASSIGN_OR_RETURN(Json v, ParseValue(0));
    SkipSpace();
    if (pos_ != s_.size()) return Error("unexpected " + Describe() + " after the value");
    return v;
  }

 private:
  Status Error(const std::string& what) const {
    // Line and column of pos_, both from 1; columns count bytes.
    int line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return InvalidArgumentError("line " + std::to_string(line) + ", column " + std::to_string(col) +
                                ": " + what);
  }

  std::string Describe() const {
    if (pos_ >= s_.size()) return "end of input";
    unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof(buf), "byte 0x%02x", c);
    return buf;
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Result<Json> ParseValue(int depth) {
    if (depth > kMaxDepth) return Error("nesting deeper than " + std::to_string(kMaxDepth));
    if (pos_ >= s_.size()) return Error("expected a value, got end of input");
    char c = s_[pos_];
    if (c == '{') return ParseObject(depth);
    if (c == '[') return ParseArray(depth);
    if (c == '"') {
      WEFT_ASSIGN_OR_RETURN(std::string str, ParseString());
      return Json(std::move(str));
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber();
    if (Consume("true")) return Json(true);
    if (Consume("false")) return Json(false);
    if (Consume("null")) return Json();
    return Error("expected a value, got " + Describe());
  }

  Result<Json> ParseObject(int depth) {
    ++pos_;  // '{'
    Json::Object obj;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return Json(std::move(obj));
    }
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        return Error("expected a string key, got " + Describe());
      }
      size_t key_pos = pos_;
      WEFT_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Error("expected ':', got " + Describe());
      ++pos_;
      SkipSpace();
      WEFT_ASSIGN_OR_RETURN(Json v, ParseValue(depth + 1));
      if (obj.count(key)) {
        pos_ = key_pos;
        return Error("duplicate key \"" + key + "\"");
      }
      obj.emplace(std::move(key), std::move(v));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return Json(std::move(obj));
      }
      return Error("expected ',' or '}' in an object, got " + Describe());
    }
  }

  Result<Json> ParseArray(int depth) {
    ++pos_;  // '['
    Json::Array arr;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return Json(std::move(arr));
    }
    while (true) {
      SkipSpace();
      WEFT_ASSIGN_OR_RETURN(Json v, ParseValue(depth + 1));
      arr.push_back(std::move(v));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return Json(std::move(arr));
      }
      return Error("expected ',' or ']' in an array, got " + Describe());
    }
  }

  Result<unsigned> Hex4() {
    if (pos_ + 4 > s_.size()) return Error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        return Error("bad hex digit " + Describe() + " in \\u escape");
      ++pos_;
    }
    return v;
  }

  static void AppendUtf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  Result<std::string> ParseString() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) return Error("unterminated string");
      char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return Error("control character " + Describe() + " in a string (escape it)");
      }
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) return Error("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          WEFT_ASSIGN_OR_RETURN(unsigned cp, Hex4());
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (!Consume("\\u")) return Error("unpaired high surrogate in \\u escape");
            WEFT_ASSIGN_OR_RETURN(unsigned lo, Hex4());
            if (lo < 0xdc00 || lo >= 0xe000) return Error("bad low surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            return Error("unpaired low surrogate in \\u escape");
          }
          AppendUtf8(out, cp);
          break;
        }
        default:
          --pos_;
          return Error("bad escape \\" + Describe());
      }
    }
  }

  Result<Json> ParseNumber() {
    size_t start = pos_;
    auto digits = [&] {
      size_t n = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_, ++n;
      return n;
    };
    if (s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
      if (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        return Error("leading zeros are not allowed in numbers");
      }
    } else if (digits() == 0) {
      return Error("expected a digit, got " + Describe());
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) return Error("expected a digit after '.', got " + Describe());
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) return Error("expected a digit in the exponent, got " + Describe());
    }
    std::string num(s_.substr(start, pos_ - start));
    errno = 0;
    double d = std::strtod(num.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(d)) {
      pos_ = start;
      return Error("number " + num + " is out of range");
    }
    return Json(d);
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

Result<Json> ParseJson(std::string_view text) { return Parser(text).ParseDocument(); }

Result<Json> ParseJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  Result<Json> r = ParseJson(ss.str());
  if (!r.ok()) return r.status().WithContext(path);
  return r;
}

Status WriteJsonFile(const std::string& path, const Json& value) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return ErrnoError("cannot write " + path, errno);
  out << value.Dump(2) << '\n';
  out.close();
  if (!out) return ErrnoError("writing " + path, errno);
  return Status();
}

}  // namespace weft
