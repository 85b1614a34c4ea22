// JSON request and response bodies (nlohmann-json). Go: encoding/json with
// json.NewDecoder(r.Body) / json.NewEncoder(w).
//
//   task<void> create(request& req, response& res) {
//     auto body = sluice::http::read_json(req, res);
//     if (!body) co_return;                    // already answered 400
//     ...
//     sluice::http::write_json(res, 201, {{"id", id}});
//   }
//
// Errors follow one shape: {"error": "..."}.
#pragma once

#include <sluice/http/message.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string_view>

namespace sluice::http {

// Parses the request body as JSON. On failure (empty or invalid JSON)
// answers 400 {"error": "invalid JSON: ..."} and returns nullopt.
std::optional<nlohmann::json> read_json(const request& req, response& res);

// Whether `text` is one JSON document (RFC 8259), without building it. The
// answer is nlohmann::json::accept(text)'s — strict grammar, well-formed
// UTF-8 in strings, no lone surrogate escapes, numbers within double range,
// a leading UTF-8 BOM allowed — except that a raw NUL byte is refused
// (nlohmann takes one as the end of the input). Differentially tested
// against it; several times faster (one pass, no allocation unless nesting
// exceeds 64 levels). For services that check a body they pass on
// unchanged. Go: json.Valid (which also accepts lone surrogates and
// out-of-range numbers).
bool json_valid(std::string_view text) noexcept;

// Sets status, Content-Type: application/json and the serialized value.
// Invalid UTF-8 in strings is replaced (U+FFFD), never thrown.
void write_json(response& res, int status, const nlohmann::json& value);

// write_json(res, status, {"error": message}).
void write_json_error(response& res, int status, std::string_view message);

}  // namespace sluice::http
