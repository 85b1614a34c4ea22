// router: a request multiplexer with Go 1.22 ServeMux patterns.
// Go: http.ServeMux.
//
//   sluice::http::router mux;
//   mux.handle("GET /v1/events/{id}", get_event);       // req.path_value("id")
//   mux.handle("POST /v1/topics/{topic}/events", post_event);
//   mux.handle("/static/{path...}", serve_file);          // any method, rest of the path
//   mux.handle("GET /{$}", index);                        // exactly "/"
//   sluice::http::server srv(mux);
//
// Pattern syntax: `[METHOD ]/seg/seg...`. A segment is a literal, `{name}`
// (one whole segment), or — last only — `{name...}` (the rest of the path,
// possibly empty) or `{$}` (the path ends here, after a trailing slash). A
// pattern ending in "/" matches every path below it, like `{name...}` without
// a name. Wildcards match percent-decoded segments and path_value returns the
// decoded text. A method of GET also matches HEAD. Host patterns are not
// supported.
//
// Choosing among patterns that match: at each segment a literal beats `{name}`,
// which beats `{name...}` (and the trailing-slash form); at the end, a pattern
// for the request's method beats one without a method. Registering the same
// pattern shape twice (wildcard names aside) throws.
//
// Answers the router gives itself: 404 when no pattern matches the path; 405
// with `Allow` when patterns match the path but not the method; 301 to the
// clean path for paths with "//", "." or ".." segments, and from "/a" to
// "/a/" when only "/a/" (a subtree) is registered; 400 for a malformed
// percent-escape.
#pragma once

#include <sluice/http/server.hpp>

#include <memory>
#include <string_view>

namespace sluice::http {

class router {
 public:
  router();

  // Registers `h` for `pattern`. Throws std::invalid_argument for a malformed
  // pattern, an empty handler, or a pattern registered before. Not safe to
  // call while the router serves requests (register everything first).
  // Go: mux.Handle(pattern, h).
  router& handle(std::string_view pattern, handler h);

  // Dispatches: sets req.pattern() and path values, then runs the handler.
  // Go: mux.ServeHTTP(w, r).
  task<void> operator()(request& req, response& res) const;

  // The handler that would serve this method and path, and its pattern,
  // without running it (nullptr and "" if the router would answer itself).
  // Go: mux.Handler(r).
  struct match_result {
    const handler* h = nullptr;
    std::string_view pattern;
  };
  match_result match(std::string_view method, std::string_view path) const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace sluice::http
