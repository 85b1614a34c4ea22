// json_valid against nlohmann::json::accept: the same answer for edge cases
// and for hundreds of thousands of generated and damaged documents.
#include "json_gen.hpp"

#include <sluice/http/json.hpp>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace {

using sluice::http::json_valid;

// nlohmann takes a NUL byte outside a string as the end of the input (so
// "[1]\0junk" passes); json_valid, like RFC 8259, refuses any raw NUL.
bool oracle(const std::string& s) { return s.find('\0') == std::string::npos && nlohmann::json::accept(s); }

TEST(JsonValid, EdgeCasesMatchNlohmann) {
  const std::vector<std::string> cases = {
      "", " ", "{}", "[]", " {} ", "{} {}", "{}x", "[1,]", "[,1]", "[1 2]", "{\"a\"}", "{\"a\":}",
      "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}", "{1:2}", "[\"a\":1]", "{\"a\":[1,{\"b\":null}]}",
      "true", "false", "null", "tru", "nul", "True", "nulls", "0", "-0", "01", "-01", "1.", ".5",
      "1.5", "-1.5e10", "1e", "1e+", "1E-5", "1e999", "-1e999", "1e308", "1.8e308", "1e-999",
      "123456789012345678901234567890", std::string(309, '9'), std::string(308, '9'), "-", "--1",
      "+1", "\"\"", "\"a", "\"\\\"", "\"\\q\"", "\"\\u00e9\"", "\"\\u00E9\"", "\"\\u00g9\"", "\"\\u12\"",
      "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83d\\u0041\"", "\"\\ud83dx\"",
      "\"caf\xc3\xa9\"", "\"\xc3\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"",
      "\"\xf4\x90\x80\x80\"", "\"\xf0\x9f\x98\x80\"", "\"\xff\"", "\"\x7f\"", "\"\x1f\"", "\"\t\"",
      std::string("\"\0\"", 3), std::string("[\0]", 3), std::string("[1]\0junk", 8), std::string("\0", 1), "\xef\xbb\xbf{}", "\xef\xbb{}", "\xef\xbb\xbf",
      "[[[[[[[[[[]]]]]]]]]]", "[[[[[[[[[[]]]]]]]]]", std::string(100, '[') + std::string(100, ']'),
      std::string(100000, '[') + std::string(100000, ']'), std::string(100000, '['),
      "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":\"e\"}]}}}", "\r\n\t[1]\r\n", "[1]\f", "\v[1]",
  };
  for (const auto& c : cases) EXPECT_EQ(json_valid(c), oracle(c)) << "input: " << c.substr(0, 60);
}

TEST(JsonValid, GeneratedAndDamagedDocumentsMatchNlohmann) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  sl_http::json_gen gen(seed);
  int valid = 0;
  for (int i = 0; i < 100000; ++i) {
    std::string doc = gen.document();
    if (i % 2 == 1) doc = gen.mutate(std::move(doc));
    if (i % 5 == 4) doc = gen.mutate(std::move(doc));  // twice damaged
    const bool want = oracle(doc);
    valid += want;
    ASSERT_EQ(json_valid(doc), want) << "input: " << doc;
  }
  EXPECT_GT(valid, 20000);
  EXPECT_LT(valid, 90000);
}

}  // namespace
