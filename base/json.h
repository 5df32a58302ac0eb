// A small JSON value, parser and writer: enough for weft's data files (models, clusters, plans)
// without a third-party dependency. Sits in base/; depends only on Status/Result.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace weft {

// A JSON value: null, bool, number (double), string, array or object (keys kept sorted, so
// output is deterministic). A value type: copies are deep. Thread-compatible.
//
// Accessors that take a default never fail; the typed getters (GetNumber, GetString, ...) return
// InvalidArgument naming the key and what was expected, so a bad data file says what is wrong.
class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::map<std::string, Json, std::less<>>;

  Json() = default;
  Json(std::nullptr_t) {}                                                  // NOLINT
  Json(bool b) : type_(Type::kBool), bool_(b) {}                           // NOLINT
  Json(double d) : type_(Type::kNumber), num_(d) {}                        // NOLINT
  Json(int v) : type_(Type::kNumber), num_(v) {}                           // NOLINT
  Json(int64_t v) : type_(Type::kNumber), num_(static_cast<double>(v)) {}  // NOLINT
  Json(const char* s) : type_(Type::kString), str_(s) {}                   // NOLINT
  Json(std::string s) : type_(Type::kString), str_(std::move(s)) {}        // NOLINT
  Json(Array a);                                                           // NOLINT
  Json(Object o);                                                          // NOLINT
  Json(const Json& other);
  Json& operator=(const Json& other);
  Json(Json&&) noexcept = default;
  Json& operator=(Json&&) noexcept = default;

  static Json MakeArray() { return Json(Array{}); }
  static Json MakeObject() { return Json(Object{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Raw access; calling the wrong one for the type is a broken invariant (aborts).
  bool as_bool() const;
  double as_number() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;
  Object& as_object();

  // Arrays: append. Objects: set / find (null when absent or not an object).
  void Push(Json v);
  void Set(std::string key, Json v);
  const Json* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed lookups in an object. `what` names the enclosing thing for messages ("layer 3").
  Result<double> GetNumber(std::string_view key, std::string_view what) const;
  Result<int64_t> GetInt(std::string_view key, std::string_view what) const;
  Result<std::string> GetString(std::string_view key, std::string_view what) const;
  Result<const Array*> GetArray(std::string_view key, std::string_view what) const;
  double NumberOr(std::string_view key, double def) const;
  std::string StringOr(std::string_view key, std::string def) const;

  // Compact (indent < 0) or pretty-printed with `indent` spaces. Numbers that are integers print
  // without a fraction; others with enough digits to round-trip.
  std::string Dump(int indent = -1) const;

  friend bool operator==(const Json& a, const Json& b);

 private:
  void DumpTo(std::string& out, int indent, int depth) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double num_ = 0;
  std::string str_;
  std::unique_ptr<Array> arr_;
  std::unique_ptr<Object> obj_;
};

// `s` as a JSON string literal, quotes included; control characters and DEL are escaped, so the
// result is also a valid YAML double-quoted scalar.
std::string JsonQuote(std::string_view s);

// Parses one JSON document (RFC 8259; trailing content other than whitespace is an error).
// Errors are InvalidArgument "line L, column C: <what was wrong>".
Result<Json> ParseJson(std::string_view text);
// Reads and parses a file; errors name the path.
Result<Json> ParseJsonFile(const std::string& path);
// Writes `value` pretty-printed to `path` (with a final newline).
Status WriteJsonFile(const std::string& path, const Json& value);

}  // namespace weft
