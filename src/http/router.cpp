// The router's trie: one node per path position; each node has literal
// children, one `{name}` child, and endpoints for patterns that end there
// (exactly, or with a rest-of-path wildcard). Matching is a depth-first search
// in precedence order (literal, wildcard, rest), so the first endpoint found
// with a handler for the method is the most specific one.
#include <sluice/http/router.hpp>

#include "token.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace sluice::http {

namespace {

struct endpoint {
  std::string pattern;             // as registered (what req.pattern() shows)
  std::string method;              // "" = any method
  std::vector<std::string> names;  // wildcard names in order ("" for anonymous)
  handler h;
};

// The endpoint of `list` that serves `method`: its own method first, GET for
// HEAD, then a method-less one.
const endpoint* pick(const std::vector<std::unique_ptr<endpoint>>& list, std::string_view method) {
  for (const auto& e : list) {
    if (e->method == method) return e.get();
  }
  if (method == "HEAD") {
    for (const auto& e : list) {
      if (e->method == "GET") return e.get();
    }
  }
  for (const auto& e : list) {
    if (e->method.empty()) return e.get();
  }
  return nullptr;
}

struct node {
  std::vector<std::pair<std::string, std::unique_ptr<node>>> literals;
  std::unique_ptr<node> wildcard;
  // Patterns ending here, by shape: exact end, or rest-of-path from here.
  std::vector<std::unique_ptr<endpoint>> exact;
  std::vector<std::unique_ptr<endpoint>> rest;

  node* literal(std::string_view seg) const noexcept {
    for (const auto& [s, n] : literals) {
      if (s == seg) return n.get();
    }
    return nullptr;
  }
};

bool valid_name(std::string_view n) noexcept {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::vector<std::string_view> split(std::string_view path) {
  // "/a/b" -> {a, b}; "/a/" -> {a, ""}; "/" -> {""}.
  std::vector<std::string_view> out;
  path.remove_prefix(1);
  for (;;) {
    const std::size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Whether path.Clean would leave the path as it is: no empty segment but a
// trailing one, no "." or ".." segment. One pass.
bool is_clean(std::string_view p) noexcept {
  std::size_t i = 1;  // p[0] == '/'
  while (i <= p.size()) {
    std::size_t j = i;
    while (j < p.size() && p[j] != '/') ++j;
    const std::size_t len = j - i;
    const bool last = j >= p.size();
    if (len == 0 && !last) return false;  // "//"
    if (len == 1 && p[i] == '.') return false;
    if (len == 2 && p[i] == '.' && p[i + 1] == '.') return false;
    i = j + 1;
  }
  return true;
}

// Go's path.Clean for an absolute path, keeping a trailing slash.
std::string clean_path(std::string_view p) {
  std::vector<std::string_view> parts;
  const bool trailing = p.size() > 1 && (p.back() == '/' || p.ends_with("/.") || p.ends_with("/.."));
  std::string_view rest = p;
  while (!rest.empty()) {
    const std::size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(seg);
  }
  std::string out;
  for (std::string_view s : parts) out.append("/").append(s);
  if (out.empty()) return "/";
  if (trailing) out.push_back('/');
  return out;
}

// The request path split into percent-decoded segments. Matching runs on a
// per-thread scratch copy (it never suspends), so routing a request
// allocates nothing once the scratch is warm; a segment without escapes is a
// view into the request's own path.
struct decoded_path {
  std::string_view raw;
  std::vector<std::string_view> segs;
  std::vector<bool> decoded_from;           // decoded_from[i]: some segment >= i was decoded
  std::vector<bool> flags;                  // flags[i]: segment i was decoded
  std::vector<std::unique_ptr<std::string>> storage;  // decoded segments and joined rests
  std::size_t used = 0;                     // storage[0, used) belong to this path

  std::string& scratch() {
    if (used == storage.size()) storage.push_back(std::make_unique<std::string>());
    std::string& s = *storage[used++];
    s.clear();
    return s;
  }
  // false: a malformed escape.
  bool assign(std::string_view path) {
    raw = path;
    segs.clear();
    used = 0;
    bool any = false;
    flags.clear();
    std::string_view rest = path.substr(1);  // "/a/b" -> "a/b"
    for (;;) {
      const std::size_t slash = rest.find('/');
      const std::string_view seg = rest.substr(0, slash);
      if (seg.find('%') == std::string_view::npos) {
        segs.push_back(seg);
        flags.push_back(false);
      } else {
        auto d = percent_decode(seg);
        if (!d) return false;
        std::string& s = scratch();
        s = std::move(*d);
        segs.push_back(s);
        flags.push_back(true);
        any = true;
      }
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
    decoded_from.assign(segs.size() + 1, false);
    if (any) {
      for (std::size_t i = segs.size(); i-- > 0;) decoded_from[i] = flags[i] || decoded_from[i + 1];
    }
    return true;
  }
  // The rest of the path from segment i, decoded.
  std::string_view rest_from(std::size_t i) {
    if (i >= segs.size()) return {};
    if (!decoded_from[i]) return raw.substr(static_cast<std::size_t>(segs[i].data() - raw.data()));
    std::string& s = scratch();
    for (std::size_t k = i; k < segs.size(); ++k) {
      if (k > i) s.push_back('/');
      s.append(segs[k]);
    }
    return s;
  }
};

struct match_state {
  std::string_view method;
  decoded_path* path = nullptr;
  const endpoint* found = nullptr;
  std::vector<std::string_view> values;  // wildcard values along the way
  bool path_matched = false;
  std::vector<std::string> allow;

  void reset(std::string_view m, decoded_path* p) {
    method = m;
    path = p;
    found = nullptr;
    values.clear();
    path_matched = false;
    allow.clear();
  }
};

bool consider(match_state& st, const std::vector<std::unique_ptr<endpoint>>& list) {
  if (list.empty()) return false;
  st.path_matched = true;
  if (const endpoint* ep = pick(list, st.method)) {
    st.found = ep;
    return true;
  }
  for (const auto& e : list) {
    st.allow.push_back(e->method);
    if (e->method == "GET") st.allow.emplace_back("HEAD");
  }
  return false;
}

// On success st.values holds the found endpoint's wildcard values.
bool search(const node& n, std::size_t i, match_state& st) {
  const auto& segs = st.path->segs;
  if (i == segs.size()) return consider(st, n.exact);
  if (const node* lit = n.literal(segs[i])) {
    if (search(*lit, i + 1, st)) return true;
  }
  if (n.wildcard && !segs[i].empty()) {
    st.values.push_back(segs[i]);
    if (search(*n.wildcard, i + 1, st)) return true;
    st.values.pop_back();
  }
  if (!n.rest.empty()) {
    st.values.push_back(st.path->rest_from(i));
    if (consider(st, n.rest)) return true;
    st.values.pop_back();
  }
  return false;
}

struct match_scratch {
  decoded_path path;
  match_state state;
};
thread_local match_scratch tl_scratch;

}  // namespace

struct router::impl {
  node root;
  // For the "/a" -> "/a/" redirect: is there a subtree pattern at this path?
  bool has_subtree(const std::vector<std::string_view>& segs) const {
    const node* n = &root;
    for (std::string_view s : segs) {
      n = n->literal(s);
      if (n == nullptr) return false;
    }
    return !n->rest.empty();
  }
};

router::router() : impl_(std::make_shared<impl>()) {}

router& router::handle(std::string_view pattern, handler h) {
  const auto bad = [&](const char* why) {
    return std::invalid_argument("sluice::http::router: pattern \"" + std::string(pattern) +
                                 "\": " + why);
  };
  if (!h) throw bad("empty handler");
  std::string_view rest = pattern;
  std::string method;
  if (const std::size_t sp = rest.find_first_of(" \t"); sp != std::string_view::npos) {
    method.assign(rest.substr(0, sp));
    rest.remove_prefix(sp);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    if (!detail::is_token(method)) {
      throw bad("invalid method");
    }
  }
  if (rest.empty() || rest.front() != '/') throw bad("the path must start with '/' (host patterns are not supported)");

  const std::vector<std::string_view> segs = split(rest);
  node* n = &impl_->root;
  std::vector<std::string> names;
  bool is_rest = false;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    std::string_view s = segs[i];
    const bool last = i + 1 == segs.size();
    if (s.empty() && last) {
      // Trailing slash: the subtree below (unless {$} follows, handled below).
      is_rest = true;
      names.emplace_back();
      break;
    }
    if (s.empty()) throw bad("empty segment");
    if (s.front() == '{') {
      if (s.back() != '}') throw bad("a wildcard must be a whole segment");
      std::string_view name = s.substr(1, s.size() - 2);
      if (name == "$") {
        // "/a/{$}": exactly "/a/", i.e. an empty last segment, then the end.
        if (!last) throw bad("{$} must be the last segment");
        node* child = n->literal("");
        if (child == nullptr) {
          n->literals.emplace_back(std::string(), std::make_unique<node>());
          child = n->literals.back().second.get();
        }
        n = child;
        break;
      }
      const bool multi = name.ends_with("...");
      if (multi) name.remove_suffix(3);
      if (!valid_name(name)) throw bad("invalid wildcard name");
      if (std::find(names.begin(), names.end(), name) != names.end()) throw bad("duplicate wildcard name");
      names.emplace_back(name);
      if (multi) {
        if (!last) throw bad("a {name...} wildcard must be the last segment");
        is_rest = true;
        break;
      }
      if (!n->wildcard) n->wildcard = std::make_unique<node>();
      n = n->wildcard.get();
      continue;
    }
    if (s.find_first_of("{}") != std::string_view::npos) throw bad("a wildcard must be a whole segment");
    node* child = n->literal(s);
    if (child == nullptr) {
      n->literals.emplace_back(std::string(s), std::make_unique<node>());
      child = n->literals.back().second.get();
    }
    n = child;
  }
  auto& list = is_rest ? n->rest : n->exact;
  for (const auto& e : list) {
    if (e->method == method) throw bad(("conflicts with \"" + e->pattern + "\"").c_str());
  }
  auto ep = std::make_unique<endpoint>();
  ep->pattern.assign(pattern);
  ep->method = std::move(method);
  ep->names = std::move(names);
  ep->h = std::move(h);
  list.push_back(std::move(ep));
  return *this;
}

router::match_result router::match(std::string_view method, std::string_view path) const {
  if (path.empty() || path.front() != '/') return {};
  match_scratch& sc = tl_scratch;
  if (!sc.path.assign(path)) return {};
  sc.state.reset(method, &sc.path);
  search(impl_->root, 0, sc.state);
  if (sc.state.found == nullptr) return {};
  return {&sc.state.found->h, sc.state.found->pattern};
}

task<void> router::operator()(request& req, response& res) const {
  const std::string_view path = req.raw_path();
  if (path.empty() || path.front() != '/') {
    // "*" (OPTIONS *) or an absolute-form target we do not route.
    res.error(400, "bad request target");
    co_return;
  }
  if (!is_clean(path)) {
    std::string to = clean_path(path);
    if (!req.raw_query().empty()) to.append("?").append(req.raw_query());
    res.header().set("Location", to);
    res.error(301, "moved permanently");
    co_return;
  }
  // Matching does not suspend: the per-thread scratch is ours until the
  // handler is called, and what the handler needs is copied out first.
  match_scratch& sc = tl_scratch;
  if (!sc.path.assign(path)) {
    res.error(400, "malformed percent-escape in path");
    co_return;
  }
  match_state& st = sc.state;
  st.reset(req.method(), &sc.path);
  search(impl_->root, 0, st);
  if (st.found == nullptr) {
    if (st.path_matched && !st.allow.empty()) {
      std::sort(st.allow.begin(), st.allow.end());
      st.allow.erase(std::unique(st.allow.begin(), st.allow.end()), st.allow.end());
      std::string allow;
      for (const auto& m : st.allow) {
        if (!allow.empty()) allow.append(", ");
        allow.append(m);
      }
      res.header().set("Allow", allow);
      res.error(405, "method not allowed");
      co_return;
    }
    const auto& segs = sc.path.segs;
    if (!segs.empty() && !segs.back().empty() && impl_->has_subtree(segs)) {
      std::string to(path);
      to.push_back('/');
      if (!req.raw_query().empty()) to.append("?").append(req.raw_query());
      res.header().set("Location", to);
      res.error(301, "moved permanently");
      co_return;
    }
    res.error(404, "not found");
    co_return;
  }
  const endpoint& ep = *st.found;
  if (!ep.names.empty()) {
    std::vector<std::pair<std::string_view, std::string>> values;
    values.reserve(ep.names.size());
    for (std::size_t k = 0; k < ep.names.size() && k < st.values.size(); ++k) {
      if (!ep.names[k].empty()) values.emplace_back(ep.names[k], std::string(st.values[k]));
    }
    req.set_path_values(std::move(values));
  }
  req.set_pattern(ep.pattern);
  co_await ep.h(req, res);
}

}  // namespace sluice::http
