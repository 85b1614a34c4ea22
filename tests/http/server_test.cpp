// The server over real loopback sockets: framing, keep-alive, pipelining,
// limits, timeouts, malformed input, contexts and shutdown.
#include "http_test_util.hpp"

#include <sluice/http/router.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <atomic>

using namespace std::chrono_literals;
using sl_http::fetch;
using sl_http::get;
using sl_http::raw_client;
using sl_http::test_server;
using sluice::task;
namespace http = sluice::http;

namespace {

task<void> hello(http::request&, http::response& res) {
  res.send(200, "hello\n");
  co_return;
}

// Echoes method, target, body and a header back.
task<void> echo(http::request& req, http::response& res) {
  std::string out(req.method());
  out.append(" ").append(req.target()).append(" [").append(req.body()).append("] ");
  out.append(req.header().get_or("x-test", "-"));
  res.send(200, out);
  co_return;
}

}  // namespace

TEST(HttpServer, AnswersWithContentLengthDateAndBody) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello);
    auto r = co_await fetch(ts.address, get("/hello"));
    EXPECT_TRUE(r.has_value());
    if (r) {
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "hello\n");
      EXPECT_EQ(r->header("Content-Length"), "6");
      EXPECT_TRUE(r->header("Date").has_value());
      EXPECT_EQ(r->header("Content-Type"), "text/plain; charset=utf-8");
      EXPECT_FALSE(r->header("Connection").has_value());
    }
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, KeepAliveReusesTheConnection) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto c = co_await raw_client::connect(ts.address);
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(co_await c.send(get("/n/" + std::to_string(i))));
      auto r = co_await c.read_response();
      EXPECT_TRUE(r.has_value());
      if (r) {
        EXPECT_EQ(r->body, "GET /n/" + std::to_string(i) + " [] -");
      }
    }
    EXPECT_EQ(ts.srv->stats().connections_accepted, 1u);
    EXPECT_EQ(ts.srv->stats().requests, 5u);
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, PipelinedRequestsAreAnsweredInOrder) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto c = co_await raw_client::connect(ts.address);
    std::string batch;
    for (int i = 0; i < 20; ++i) batch += get("/p/" + std::to_string(i));
    batch += "POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    EXPECT_TRUE(co_await c.send(batch));
    for (int i = 0; i < 20; ++i) {
      auto r = co_await c.read_response();
      EXPECT_TRUE(r.has_value());
      if (r) {
        EXPECT_EQ(r->body, "GET /p/" + std::to_string(i) + " [] -");
      }
    }
    auto last = co_await c.read_response();
    EXPECT_TRUE(last.has_value());
    if (last) {
      EXPECT_EQ(last->body, "POST /last [abc] -");
    }
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ReadsContentLengthAndChunkedBodies) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto a = co_await fetch(ts.address,
                            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    EXPECT_TRUE(a && a->body == "POST /a [hello world] -");
    auto b = co_await fetch(ts.address,
                            "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n");
    EXPECT_TRUE(b && b->body == "POST /b [hello world] -") << (b ? b->body : "none");
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, BodySplitAcrossManyWritesArrivesWhole) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto c = co_await raw_client::connect(ts.address);
    const std::string body(100000, 'z');
    EXPECT_TRUE(co_await c.send("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"));
    for (std::size_t off = 0; off < body.size(); off += 7777) {
      EXPECT_TRUE(co_await c.send(std::string_view(body).substr(off, 7777)));
    }
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->body == "PUT /big [" + body + "] -");
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ExpectContinueGets100BeforeTheBody) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(
        "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
    auto cont = co_await c.read_response();
    EXPECT_TRUE(cont && cont->status == 100);
    EXPECT_TRUE(co_await c.send("data"));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 200 && r->body == "POST /e [data] -");
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ExpectContinueForATooLargeBodyIs413WithoutContinue) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo, {.max_body_bytes = 10});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(
        "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 413);
    if (r) {
      EXPECT_EQ(r->header("Connection"), "close");
    }
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, UnknownExpectationIs417) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo);
    auto r = co_await fetch(ts.address, get("/", "Expect: teapot\r\n"));
    EXPECT_TRUE(r && r->status == 417);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, HeadGetsHeadersAndLengthButNoBody) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello);
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n" + get("/hello")));
    auto h = co_await c.read_response(/*head=*/true);
    EXPECT_TRUE(h && h->status == 200 && h->body.empty());
    if (h) {
      EXPECT_EQ(h->header("Content-Length"), "6");
    }
    auto g = co_await c.read_response();  // the bytes after HEAD's headers belong to GET
    EXPECT_TRUE(g && g->body == "hello\n");
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, Http10ClosesUnlessKeepAliveIsAsked) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello);
    {
      auto c = co_await raw_client::connect(ts.address);
      EXPECT_TRUE(co_await c.send("GET /hello HTTP/1.0\r\n\r\n"));
      auto r = co_await c.read_response();
      EXPECT_TRUE(r && r->status == 200);
      if (r) {
        EXPECT_EQ(r->header("Connection"), "close");
      }
      EXPECT_TRUE(co_await c.closed_by_server());
    }
    {
      auto c = co_await raw_client::connect(ts.address);
      EXPECT_TRUE(co_await c.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
      auto r = co_await c.read_response();
      EXPECT_TRUE(r && r->status == 200);
      if (r) {
        EXPECT_EQ(r->header("Connection"), "keep-alive");
      }
      EXPECT_TRUE(co_await c.send("GET /hello HTTP/1.0\r\n\r\n"));
      auto r2 = co_await c.read_response();
      EXPECT_TRUE(r2 && r2->status == 200);
    }
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ConnectionCloseFromTheClientIsHonoured) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello);
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/hello", "Connection: close\r\n") + get("/ignored")));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 200);
    if (r) {
      EXPECT_EQ(r->header("Connection"), "close");
    }
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_EQ(ts.srv->stats().requests, 1u);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, StreamingResponseIsChunked) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts([](http::request&, http::response& res) -> task<void> {
      res.header().set("Content-Type", "text/event-stream");
      for (int i = 0; i < 3; ++i) {
        res.write("part" + std::to_string(i) + ";");
        EXPECT_FALSE(co_await res.flush());
        EXPECT_TRUE(res.headers_sent());
      }
      res.write("end");
    });
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/s") + get("/s")));
    for (int k = 0; k < 2; ++k) {
      auto r = co_await c.read_response();
      EXPECT_TRUE(r.has_value());
      if (r) {
        EXPECT_TRUE(r->chunked);
        EXPECT_EQ(r->body, "part0;part1;part2;end");
        EXPECT_FALSE(r->header("Content-Length").has_value());
      }
    }
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, HandlerExceptionIs500AndALogLine) {
  sl_test::run_checked([]() -> task<void> {
    std::vector<std::string> lines;
    test_server ts(
        [](http::request&, http::response&) -> task<void> {
          throw std::runtime_error("boom");
          co_return;
        },
        {.error_log = [&](std::string_view l) { lines.emplace_back(l); }});
    auto r = co_await fetch(ts.address, get("/x"));
    EXPECT_TRUE(r && r->status == 500);
    EXPECT_FALSE(co_await ts.stop());
    EXPECT_EQ(lines.size(), 1u);
    if (!lines.empty()) {
      EXPECT_NE(lines[0].find("boom"), std::string::npos);
    }
  });
}

// ---- limits ---------------------------------------------------------------------------

TEST(HttpServer, OversizedHeadersAre431) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_header_bytes = 1024});
    auto r = co_await fetch(ts.address, get("/", "X-Big: " + std::string(2000, 'a') + "\r\n"));
    EXPECT_TRUE(r && r->status == 431);
    // Just under the limit is fine.
    auto ok = co_await fetch(ts.address, get("/", "X-Big: " + std::string(900, 'a') + "\r\n"));
    EXPECT_TRUE(ok && ok->status == 200);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, OversizedHeadersSentByteByByteAre431) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_header_bytes = 256});
    auto c = co_await raw_client::connect(ts.address);
    const std::string req = get("/", "X-Big: " + std::string(400, 'a') + "\r\n");
    bool sent = true;
    for (std::size_t i = 0; i < req.size() && sent; i += 16) sent = co_await c.send(std::string_view(req).substr(i, 16));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 431);
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, TooManyHeadersAre431) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_headers = 10});
    std::string extra;
    for (int i = 0; i < 11; ++i) extra += "X-H" + std::to_string(i) + ": v\r\n";
    auto r = co_await fetch(ts.address, get("/", extra));  // Host + 11 = 12 fields
    EXPECT_TRUE(r && r->status == 431);
    std::string fine;
    for (int i = 0; i < 9; ++i) fine += "X-H" + std::to_string(i) + ": v\r\n";
    auto ok = co_await fetch(ts.address, get("/", fine));  // Host + 9 = 10
    EXPECT_TRUE(ok && ok->status == 200);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, OversizedBodyIs413ForBothFramings) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo, {.max_body_bytes = 8});
    auto a = co_await fetch(ts.address, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n123456789");
    EXPECT_TRUE(a && a->status == 413);
    auto b = co_await fetch(ts.address,
                            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n");
    EXPECT_TRUE(b && b->status == 413);
    auto ok = co_await fetch(ts.address, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678");
    EXPECT_TRUE(ok && ok->status == 200);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, OverMaxConnectionsGets503AndClose) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_connections = 2});
    auto a = co_await raw_client::connect(ts.address);
    auto b = co_await raw_client::connect(ts.address);
    // Both are served (so both are open connections on the server).
    EXPECT_TRUE(co_await a.send(get("/")));
    EXPECT_TRUE(co_await b.send(get("/")));
    EXPECT_TRUE((co_await a.read_response()).has_value());
    EXPECT_TRUE((co_await b.read_response()).has_value());
    auto c = co_await raw_client::connect(ts.address);
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 503);
    if (r) {
      EXPECT_EQ(r->header("Retry-After"), "1");
    }
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_EQ(ts.srv->stats().connections_rejected, 1u);
    a.close();
    b.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, MaxRequestsPerConnectionEndsWithConnectionClose) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_requests_per_connection = 3});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/") + get("/") + get("/") + get("/")));
    for (int i = 0; i < 3; ++i) {
      auto r = co_await c.read_response();
      EXPECT_TRUE(r && r->status == 200);
      if (r) {
        EXPECT_EQ(r->header("Connection").has_value(), i == 2) << i;
      }
    }
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_FALSE(co_await ts.stop());
  });
}

// ---- malformed input ------------------------------------------------------------------

struct bad_case {
  const char* name;
  const char* bytes;
  int status;
};

class HttpServerMalformed : public ::testing::TestWithParam<bad_case> {};

TEST_P(HttpServerMalformed, IsAnsweredWithItsStatusAndClosed) {
  const bad_case bc = GetParam();
  sl_test::run_checked([&]() -> task<void> {
    int calls = 0;
    test_server ts([&](http::request&, http::response& res) -> task<void> {
      ++calls;
      res.send(200, "ok");
      co_return;
    });
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(bc.bytes));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r.has_value()) << bc.name;
    if (r) {
      EXPECT_EQ(r->status, bc.status) << bc.name << ": " << r->body;
      EXPECT_EQ(r->header("Connection"), "close") << bc.name;
    }
    EXPECT_TRUE(co_await c.closed_by_server()) << bc.name;
    c.close();
    EXPECT_EQ(calls, 0) << bc.name;
    EXPECT_FALSE(co_await ts.stop());
  });
}

INSTANTIATE_TEST_SUITE_P(
    Rfc9112, HttpServerMalformed,
    ::testing::Values(
        bad_case{"content_length_and_chunked",
                 "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        bad_case{"differing_content_lengths",
                 "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
        bad_case{"bad_chunk_size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400},
        bad_case{"chunk_size_overflow",
                 "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400},
        bad_case{"bare_lf_request_line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400},
        bad_case{"bare_lf_header", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400},
        bad_case{"nul_in_header_value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01" "b\r\n\r\n", 400},
        bad_case{"space_in_header_name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400},
        bad_case{"folded_header", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n", 400},
        bad_case{"empty_header_name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400},
        bad_case{"missing_host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
        bad_case{"repeated_host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        bad_case{"te_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        bad_case{"te_not_chunked_last", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
        bad_case{"negative_content_length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
        bad_case{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
        bad_case{"bad_version", "GET / HTTP/3.7\r\nHost: x\r\n\r\n", 400},
        bad_case{"http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400}),
    [](const ::testing::TestParamInfo<bad_case>& i) { return std::string(i.param.name); });

TEST(HttpServer, MalformedRequestAfterAGoodOneStillGetsTheFirstAnswer) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello);
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/hello") + "GET / HTTP/1.1\nbroken\r\n\r\n"));
    auto a = co_await c.read_response();
    EXPECT_TRUE(a && a->status == 200);
    auto b = co_await c.read_response();
    EXPECT_TRUE(b && b->status == 400);
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_FALSE(co_await ts.stop());
  });
}

// ---- timeouts -------------------------------------------------------------------------

TEST(HttpServer, SlowlorisHeadersAreCutOffByReadHeaderTimeout) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.read_header_timeout = 200ms});
    auto c = co_await raw_client::connect(ts.address);
    // A byte now and then, never finishing the headers: the deadline counts
    // from the first byte, not from the last.
    bool closed = false;
    const std::string req = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (std::size_t i = 0; i < req.size() && !closed; ++i) {
      if (!co_await c.send(std::string_view(req).substr(i, 1))) closed = true;
      co_await sluice::sleep_for(20ms);  // the client's pace, not coordination
    }
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 408);
    EXPECT_GE(ts.srv->stats().timeouts, 1u);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, SlowBodyIsCutOffByReadTimeout) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(echo, {.read_timeout = 200ms});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"));
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 408);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, IdleKeepAliveConnectionIsClosedByIdleTimeout) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.idle_timeout = 100ms});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/")));
    EXPECT_TRUE((co_await c.read_response()).has_value());
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ConnectionThatNeverSendsIsClosedByReadHeaderTimeout) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.read_header_timeout = 100ms});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.closed_by_server());
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, ClientThatDoesNotReadIsCutOffByWriteTimeout) {
  sl_test::run_checked([]() -> task<void> {
    const std::string big(8 << 20, 'x');
    test_server ts(
        [&](http::request&, http::response& res) -> task<void> {
          res.send(200, big);
          co_return;
        },
        {.write_timeout = 200ms});
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/")));
    // Never read: the server's write stalls on a full socket buffer and gives up.
    EXPECT_TRUE(co_await sl_test::until([&] { return ts.srv->stats().timeouts >= 1; }));
    EXPECT_TRUE(co_await sl_test::until([&] { return ts.srv->stats().connections_open == 0; }));
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

// ---- contexts -------------------------------------------------------------------------

TEST(HttpServer, ClientDisconnectCancelsTheHandlersContext) {
  sl_test::run_checked([]() -> task<void> {
    std::atomic<bool> started{false};
    std::error_code seen;
    sluice::chan<int> finished(1);
    test_server ts([&](http::request& req, http::response& res) -> task<void> {
      started = true;
      co_await req.ctx().done();
      seen = req.ctx().err();
      res.send(200, "too late");
      co_await finished.send(1);
    });
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/wait")));
    EXPECT_TRUE(co_await sl_test::until([&] { return started.load(); }));
    c.close();
    EXPECT_TRUE((co_await finished.recv()).has_value());
    EXPECT_EQ(seen, sluice::errc::canceled);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpServer, RequestContextIsCancelledWhenTheHandlerReturns) {
  sl_test::run_checked([]() -> task<void> {
    sluice::context kept = sluice::context::background();
    test_server ts([&](http::request& req, http::response& res) -> task<void> {
      kept = req.ctx();
      EXPECT_FALSE(kept.err());
      res.send(200, "ok");
      co_return;
    });
    auto r = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(r && r->status == 200);
    EXPECT_EQ(kept.err(), sluice::errc::canceled);
    EXPECT_FALSE(co_await ts.stop());
  });
}

// ---- shutdown -------------------------------------------------------------------------

TEST(HttpServer, ShutdownLetsInFlightRequestsFinishAndClosesIdleOnes) {
  sl_test::run_checked([]() -> task<void> {
    sluice::chan<int> release(0);
    std::atomic<int> started{0};
    test_server ts([&](http::request&, http::response& res) -> task<void> {
      ++started;
      co_await release.recv();
      res.send(200, "finished");
    });
    // Two idle keep-alive connections and three busy ones.
    auto idle1 = co_await raw_client::connect(ts.address);
    auto idle2 = co_await raw_client::connect(ts.address);
    std::vector<raw_client> busy;
    for (int i = 0; i < 3; ++i) {
      busy.push_back(co_await raw_client::connect(ts.address));
      EXPECT_TRUE(co_await busy.back().send(get("/slow")));
    }
    EXPECT_TRUE(co_await sl_test::until([&] { return started.load() == 3; }));
    auto stopping = sluice::spawn([&]() -> task<std::error_code> { co_return co_await ts.stop(10s); });
    EXPECT_TRUE(co_await idle1.closed_by_server());
    EXPECT_TRUE(co_await idle2.closed_by_server());
    for (int i = 0; i < 3; ++i) co_await release.send(1);
    for (auto& b : busy) {
      auto r = co_await b.read_response();
      EXPECT_TRUE(r && r->status == 200 && r->body == "finished");
      if (r) {
        EXPECT_EQ(r->header("Connection"), "close");
      }
      EXPECT_TRUE(co_await b.closed_by_server());
    }
    EXPECT_FALSE(co_await stopping.join());
  });
}

TEST(HttpServer, ShutdownDeadlineCancelsHandlersThatDoNotFinish) {
  sl_test::run_checked([]() -> task<void> {
    std::atomic<bool> started{false};
    test_server ts([&](http::request& req, http::response& res) -> task<void> {
      started = true;
      co_await req.ctx().done();  // only a cancellation ends this
      res.send(503, "cancelled");
    });
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/forever")));
    EXPECT_TRUE(co_await sl_test::until([&] { return started.load(); }));
    EXPECT_EQ(co_await ts.stop(100ms), sluice::errc::deadline_exceeded);
    EXPECT_EQ(ts.srv->stats().connections_open, 0u);
  });
}

TEST(HttpServer, ServeAfterShutdownReturnsClosed) {
  sl_test::run_checked([]() -> task<void> {
    http::server srv(hello);
    EXPECT_FALSE(co_await srv.shutdown(sluice::context::background()));
    auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
    EXPECT_EQ(co_await srv.serve(std::move(ln)), sluice::errc::closed);
  });
}

TEST(HttpServer, InvalidOptionsThrow) {
  EXPECT_THROW(http::server(http::handler{}), std::invalid_argument);
  EXPECT_THROW(http::server(hello, {.max_header_bytes = 0}), std::invalid_argument);
  EXPECT_THROW(http::server(hello, {.max_connections = 0}), std::invalid_argument);
}
