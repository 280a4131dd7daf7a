#include "torwart/policy/jsonc.hpp"

#include <gtest/gtest.h>

#include <string>

namespace torwart::policy {
namespace {

TEST(Jsonc, CommentsTrailingCommasAndPositions) {
  auto v = ParseJsonc(
      "// head\n"
      "{\n"
      "  /* block\n  comment */ \"a\": [1, 2.5, true, null,],\n"
      "  \"b\": {\"c\": \"x\\u00e4\\ud83d\\ude00\",},\n"
      "}\n");
  ASSERT_TRUE(v) << v.error().message();
  ASSERT_TRUE(v->IsObject());
  ASSERT_EQ(v->Members().size(), 2u);
  const auto& a = v->Members()[0];
  EXPECT_EQ(a.key, "a");
  EXPECT_EQ(a.key_pos.line, 4u);
  EXPECT_EQ(a.key_pos.column, 14u);
  ASSERT_EQ(a.value.Items().size(), 4u);
  EXPECT_TRUE(a.value.Items()[0].IsInteger());
  EXPECT_EQ(a.value.Items()[0].AsInt(), 1);
  EXPECT_FALSE(a.value.Items()[1].IsInteger());
  EXPECT_DOUBLE_EQ(a.value.Items()[1].AsDouble(), 2.5);
  EXPECT_EQ(a.value.Items()[1].pos().column, 23u);
  EXPECT_TRUE(a.value.Items()[2].AsBool());
  EXPECT_TRUE(a.value.Items()[3].IsNull());
  const Value* c = v->Find("b")->Find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->AsString(), "x\xC3\xA4\xF0\x9F\x98\x80");
  EXPECT_EQ(c->pos().line, 5u);
}

TEST(Jsonc, ColumnsCountCodePoints) {
  auto v = ParseJsonc("{\"ä\": \"ü\", \"k\": 1}");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->Members()[1].key_pos.column, 12u);
}

TEST(Jsonc, ErrorsCarryPositions) {
  struct Case {
    const char* text;
    const char* prefix;
  };
  const Case cases[] = {
      {"{\"a\": 1,\n \"b\" 2}", "2:6: expected ':'"},
      {"{\"a\": \"unterminated}", "1:7: unterminated string"},
      {"[1, 2", "1:6: unterminated array"},
      {"{\"a\": 01}", "1:7: leading zeros"},
      {"{\"a\": \"\\x\"}", "1:8: invalid escape"},
      {"{\"a\": \"\\ud800\"}", "1:8: high surrogate"},
      {"/* open", "1:1: unterminated /* comment"},
      {"{} x", "1:4: unexpected text"},
      {"", "1:1: empty document"},
      {"[tru]", "1:2: expected a value"},
      {"{\"a\": 1e999}", "1:7: number out of range"},
      {"\"a\x01\"", "1:3: control character"},
  };
  for (const Case& c : cases) {
    auto v = ParseJsonc(c.text);
    ASSERT_FALSE(v) << c.text;
    EXPECT_EQ(v.error().message().rfind(c.prefix, 0), 0u)
        << c.text << " -> " << v.error().message();
    EXPECT_TRUE(v.error().Is(Errc::kParse));
  }
}

TEST(Jsonc, RejectsInvalidUtf8AndNul) {
  EXPECT_FALSE(ParseJsonc("\"\xC3\x28\""));
  EXPECT_FALSE(ParseJsonc("\"\xED\xA0\x80\""));  // encoded surrogate
  EXPECT_FALSE(ParseJsonc("\"\xC0\xAF\""));      // overlong
  EXPECT_FALSE(ParseJsonc(std::string("[1,\0 2]", 7)));
  EXPECT_FALSE(ParseJsonc("\"\\u0000\""));
}

TEST(Jsonc, DepthAndSizeLimits) {
  std::string deep(65, '[');
  deep += std::string(65, ']');
  auto v = ParseJsonc(deep);
  ASSERT_FALSE(v);
  EXPECT_TRUE(v.error().Is(Errc::kResourceExhausted));
  std::string ok(64, '[');
  ok += std::string(64, ']');
  EXPECT_TRUE(ParseJsonc(ok));
  // A million brackets must not blow the stack.
  EXPECT_FALSE(ParseJsonc(std::string(1'000'000, '[')));

  JsoncLimits small;
  small.max_bytes = 10;
  auto big = ParseJsonc("[1,2,3,4,5,6]", small);
  ASSERT_FALSE(big);
  EXPECT_TRUE(big.error().Is(Errc::kResourceExhausted));
}

TEST(Jsonc, KeepsDuplicateKeysForTheValidator) {
  auto v = ParseJsonc("{\"a\": 1, \"a\": 2}");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->Members().size(), 2u);
  EXPECT_EQ(v->Find("a")->AsInt(), 1);
}

}  // namespace
}  // namespace torwart::policy
