// base/json: parsing (valid documents, every error with its line/column), writing, round trips.
#include "base/json.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace weft {
namespace {

TEST(JsonTest, ParsesScalarsAndContainers) {
  auto r = ParseJson(
      R"( {"a": [1, -2.5, 3e2, true, false, null], "b": {"c": "x\ty\u00e9\ud83d\ude00"}} )");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Json& j = *r;
  ASSERT_TRUE(j.is_object());
  const auto& a = j.Find("a")->as_array();
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a[0].as_number(), 1);
  EXPECT_EQ(a[1].as_number(), -2.5);
  EXPECT_EQ(a[2].as_number(), 300);
  EXPECT_TRUE(a[3].as_bool());
  EXPECT_FALSE(a[4].as_bool());
  EXPECT_TRUE(a[5].is_null());
  EXPECT_EQ(j.Find("b")->Find("c")->as_string(), "x\ty\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(j.Find("missing"), nullptr);
}

TEST(JsonTest, RoundTripsCompactAndPretty) {
  Json o = Json::MakeObject();
  o.Set("name", "gpt \"175b\"\n");
  o.Set("pi", 3.141592653589793);
  o.Set("tiny", 1.0e-300);
  o.Set("big", int64_t{1} << 50);
  Json arr = Json::MakeArray();
  arr.Push(1);
  arr.Push(Json::MakeObject());
  arr.Push(Json::MakeArray());
  o.Set("list", arr);
  for (int indent : {-1, 0, 2}) {
    auto back = ParseJson(o.Dump(indent));
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << o.Dump(indent);
    EXPECT_EQ(*back, o) << o.Dump(indent);
  }
  EXPECT_EQ(Json(42).Dump(), "42");
  EXPECT_EQ(Json(0.1).Dump(), "0.1");
  EXPECT_EQ(Json(std::nan("")).Dump(), "null");
  EXPECT_EQ(o.Dump(),
            R"({"big":1125899906842624,"list":[1,{},[]],"name":"gpt \"175b\"\n",)"
            R"("pi":3.141592653589793,"tiny":1e-300})");
}

struct BadCase {
  const char* text;
  const char* expect;  // substring of the message, including line/column
};

TEST(JsonTest, ErrorsNameLineAndColumn) {
  const BadCase cases[] = {
      {"", "line 1, column 1: expected a value, got end of input"},
      {"{\n  \"a\": 1,\n  \"b\" 2\n}", "line 3, column 7: expected ':'"},
      {"[1, 2,]", "line 1, column 7: expected a value, got ']'"},
      {"[1 2]", "line 1, column 4: expected ',' or ']'"},
      {"{\"a\":1 \"b\":2}", "line 1, column 8: expected ',' or '}'"},
      {"01", "leading zeros"},
      {"1.", "expected a digit after '.'"},
      {"-", "expected a digit"},
      {"1e", "exponent"},
      {"\"abc", "unterminated string"},
      {"\"a\nb\"", "line 1, column 3: control character"},
      {"\"\\x\"", "bad escape"},
      {"\"\\u12g4\"", "bad hex digit"},
      {"\"\\ud800\"", "unpaired high surrogate"},
      {"\"\\udc00\"", "unpaired low surrogate"},
      {"tru", "expected a value"},
      {"{\"a\":1,\"a\":2}", "line 1, column 8: duplicate key \"a\""},
      {"{} x", "line 1, column 4: unexpected 'x' after the value"},
      {"{1:2}", "expected a string key"},
      {"1e999", "out of range"},
  };
  for (const BadCase& c : cases) {
    auto r = ParseJson(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << "input: " << c.text << "\nmessage: " << r.status().message();
  }
}

TEST(JsonTest, DeepNestingIsAnErrorNotACrash) {
  std::string deep(100000, '[');
  auto r = ParseJson(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nesting deeper"), std::string::npos);
}

TEST(JsonTest, TypedGettersSayWhatIsWrong) {
  auto j = ParseJson(R"({"n": 2.5, "s": "x", "a": [1]})");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(*j->GetNumber("n", "layer 3"), 2.5);
  EXPECT_EQ(j->GetInt("n", "layer 3").status().message(),
            "layer 3: \"n\" must be an integer, got 2.5");
  EXPECT_EQ(j->GetString("n", "layer 3").status().message(),
            "layer 3: \"n\" must be a string, got a number");
  EXPECT_EQ(j->GetNumber("zz", "layer 3").status().message(), "layer 3: missing \"zz\"");
  EXPECT_EQ((*j->GetArray("a", "x"))->size(), 1u);
  EXPECT_EQ(j->NumberOr("zz", 7), 7);
  EXPECT_EQ(j->StringOr("s", "d"), "x");
}

TEST(JsonTest, FilesRoundTripAndMissingFileIsNamed) {
  std::string path = "/tmp/weft-json-test-" + std::to_string(getpid()) + ".json";
  Json o = Json::MakeObject();
  o.Set("k", Json::Array{1, 2, 3});
  ASSERT_TRUE(WriteJsonFile(path, o).ok());
  auto back = ParseJsonFile(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, o);
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("{\n\"k\": [1,,]}", f);
  std::fclose(f);
  auto bad = ParseJsonFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().rfind(path + ": line 2, column 9", 0), 0u)
      << bad.status().message();
  unlink(path.c_str());
  auto missing = ParseJsonFile("/nonexistent/x.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/x.json"), std::string::npos);
}

}  // namespace
}  // namespace weft
