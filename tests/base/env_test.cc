#include <gtest/gtest.h>

#include <cstdlib>

#include "base/env.h"
#include "base/logging.h"

namespace weft {
namespace {

WEFT_ENV_KNOB(kTestKnob, "WEFT_TEST_ONLY_KNOB", "64K", "a knob used only by env_test");
WEFT_ENV_KNOB(kBadKnob, "WEFT_TEST_ONLY_BAD", "5", "a knob set to garbage by env_test");

TEST(Env, DeclaredKnobsAreListedWithDefaults) {
  bool found = false;
  for (const EnvKnob* k : AllEnvKnobs()) {
    if (std::string(k->name()) == "WEFT_TEST_ONLY_KNOB") {
      found = true;
      EXPECT_STREQ(k->default_value(), "64K");
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(kTestKnob.GetBytes(), 65536);
}

TEST(Env, BadValueFallsBackToDefault) {
  setenv("WEFT_TEST_ONLY_BAD", "seven", 1);
  EXPECT_EQ(kBadKnob.GetInt(), 5);
}

TEST(Env, ParseHelpers) {
  int64_t v;
  EXPECT_TRUE(ParseBytes("4M", &v));
  EXPECT_EQ(v, 4 << 20);
  EXPECT_FALSE(ParseBytes("-1", &v));
  EXPECT_FALSE(ParseBytes("12Q", &v));
  EXPECT_TRUE(ParseInt("-12", &v));
  EXPECT_EQ(v, -12);
  LogLevel level;
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
}

}  // namespace
}  // namespace weft
