// The router's Go 1.22 ServeMux rules, on hand-made requests.
#include "../test_util.hpp"

#include <sluice/http/router.hpp>

#include <gtest/gtest.h>

#include <string>

using sluice::task;
namespace http = sluice::http;

namespace {

// A handler that answers with its name and the path values it was given.
http::handler named(std::string name, std::vector<std::string> keys = {}) {
  return [name, keys](http::request& req, http::response& res) -> task<void> {
    std::string out = name;
    for (const auto& k : keys) out.append(" ").append(k).append("=").append(req.path_value(k));
    res.send(200, out);
    co_return;
  };
}

struct answer {
  int status;
  std::string body;
  std::string allow;
  std::string location;
  std::string pattern;
};

answer route(const http::router& mux, std::string_view method, std::string_view target) {
  answer a{};
  sl_test::run_checked([&]() -> task<void> {
    http::request req(method, target);
    http::response res;
    co_await mux(req, res);
    a.status = res.status();
    a.body = res.body();
    a.allow = std::string(res.header().get_or("Allow", ""));
    a.location = std::string(res.header().get_or("Location", ""));
    a.pattern = std::string(req.pattern());
  }, {.workers = 1});
  return a;
}

}  // namespace

TEST(HttpRouter, WildcardsMatchOneSegmentAndPathValueReturnsThem) {
  http::router mux;
  mux.handle("GET /v1/events/{id}", named("event", {"id"}));
  mux.handle("GET /v1/topics/{topic}/subscriptions/{sub}", named("sub", {"topic", "sub"}));
  EXPECT_EQ(route(mux, "GET", "/v1/events/42").body, "event id=42");
  EXPECT_EQ(route(mux, "GET", "/v1/events/42").pattern, "GET /v1/events/{id}");
  EXPECT_EQ(route(mux, "GET", "/v1/topics/t1/subscriptions/s9").body, "sub topic=t1 sub=s9");
  EXPECT_EQ(route(mux, "GET", "/v1/events/").status, 404);  // {id} never matches an empty segment
  EXPECT_EQ(route(mux, "GET", "/v1/events/42/x").status, 404);
}

TEST(HttpRouter, WildcardValuesArePercentDecoded) {
  http::router mux;
  mux.handle("GET /files/{name}", named("f", {"name"}));
  EXPECT_EQ(route(mux, "GET", "/files/a%20b%2Fc").body, "f name=a b/c");
  EXPECT_EQ(route(mux, "GET", "/files/bad%zz").status, 400);
}

TEST(HttpRouter, RestWildcardTakesTheRemainderPossiblyEmpty) {
  http::router mux;
  mux.handle("/static/{path...}", named("static", {"path"}));
  EXPECT_EQ(route(mux, "GET", "/static/css/site.css").body, "static path=css/site.css");
  EXPECT_EQ(route(mux, "POST", "/static/").body, "static path=");
  EXPECT_EQ(route(mux, "GET", "/static/a%2Fb/c").body, "static path=a/b/c");
}

TEST(HttpRouter, TrailingSlashPatternMatchesTheSubtreeAndRedirectsTheBareName) {
  http::router mux;
  mux.handle("/docs/", named("docs"));
  EXPECT_EQ(route(mux, "GET", "/docs/").body, "docs");
  EXPECT_EQ(route(mux, "GET", "/docs/a/b").body, "docs");
  const answer a = route(mux, "GET", "/docs?x=1");
  EXPECT_EQ(a.status, 301);
  EXPECT_EQ(a.location, "/docs/?x=1");
}

TEST(HttpRouter, DollarMatchesOnlyTheExactPath) {
  http::router mux;
  mux.handle("GET /{$}", named("index"));
  mux.handle("GET /a/{$}", named("a-exact"));
  mux.handle("GET /a/", named("a-tree"));
  EXPECT_EQ(route(mux, "GET", "/").body, "index");
  EXPECT_EQ(route(mux, "GET", "/other").status, 404);
  EXPECT_EQ(route(mux, "GET", "/a/").body, "a-exact");
  EXPECT_EQ(route(mux, "GET", "/a/b").body, "a-tree");
}

TEST(HttpRouter, LiteralBeatsWildcardBeatsRest) {
  http::router mux;
  mux.handle("/x/{rest...}", named("rest"));
  mux.handle("/x/{id}", named("wild"));
  mux.handle("/x/new", named("literal"));
  EXPECT_EQ(route(mux, "GET", "/x/new").body, "literal");
  EXPECT_EQ(route(mux, "GET", "/x/7").body, "wild");
  EXPECT_EQ(route(mux, "GET", "/x/7/8").body, "rest");
}

TEST(HttpRouter, MethodPatternBeatsMethodlessAndGetServesHead) {
  http::router mux;
  mux.handle("/r", named("any"));
  mux.handle("GET /r", named("get"));
  EXPECT_EQ(route(mux, "GET", "/r").body, "get");
  EXPECT_EQ(route(mux, "HEAD", "/r").body, "get");
  EXPECT_EQ(route(mux, "DELETE", "/r").body, "any");
}

TEST(HttpRouter, KnownPathWithOtherMethodIs405WithAllow) {
  http::router mux;
  mux.handle("GET /items/{id}", named("get"));
  mux.handle("DELETE /items/{id}", named("del"));
  const answer a = route(mux, "POST", "/items/3");
  EXPECT_EQ(a.status, 405);
  EXPECT_EQ(a.allow, "DELETE, GET, HEAD");
  EXPECT_EQ(route(mux, "POST", "/nothing").status, 404);
}

TEST(HttpRouter, WildcardNamesAreKeptPerMethod) {
  http::router mux;
  mux.handle("GET /u/{name}", named("get", {"name"}));
  mux.handle("PUT /u/{who}", named("put", {"who"}));
  EXPECT_EQ(route(mux, "GET", "/u/ann").body, "get name=ann");
  EXPECT_EQ(route(mux, "PUT", "/u/bob").body, "put who=bob");
}

TEST(HttpRouter, UncleanPathsRedirectToTheCleanOne) {
  http::router mux;
  mux.handle("/a/b", named("ab"));
  const answer a = route(mux, "GET", "/a/./x/../b");
  EXPECT_EQ(a.status, 301);
  EXPECT_EQ(a.location, "/a/b");
  EXPECT_EQ(route(mux, "GET", "//a//b").location, "/a/b");
  EXPECT_EQ(route(mux, "GET", "/a/../../b?q=1").location, "/b?q=1");
}

TEST(HttpRouter, NonOriginFormTargetsAre400) {
  http::router mux;
  mux.handle("/", named("root"));
  EXPECT_EQ(route(mux, "OPTIONS", "*").status, 400);
  EXPECT_EQ(route(mux, "GET", "/anything").body, "root");
}

TEST(HttpRouter, MatchReportsTheHandlerWithoutRunningIt) {
  http::router mux;
  mux.handle("GET /m/{id}", named("m"));
  const auto m = mux.match("GET", "/m/1");
  EXPECT_NE(m.h, nullptr);
  EXPECT_EQ(m.pattern, "GET /m/{id}");
  EXPECT_EQ(mux.match("GET", "/none").h, nullptr);
}

TEST(HttpRouter, MalformedPatternsThrow) {
  http::router mux;
  const auto h = named("x");
  EXPECT_THROW(mux.handle("", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("example.com/x", h), std::invalid_argument);  // host patterns
  EXPECT_THROW(mux.handle("GET", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("G(T /x", h), std::invalid_argument);  // not a token method
  EXPECT_THROW(mux.handle("/a/{x", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a/x{y}", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a/{1x}", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a/{x}/{x}", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a/{x...}/b", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a/{$}/b", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/a//b", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("G(T /a", h), std::invalid_argument);
  EXPECT_THROW(mux.handle("/ok", http::handler{}), std::invalid_argument);
  mux.handle("GET /dup/{a}", h);
  EXPECT_THROW(mux.handle("GET /dup/{b}", h), std::invalid_argument);
  mux.handle("POST /dup/{b}", h);  // another method is not a duplicate
}
