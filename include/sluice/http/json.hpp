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

// Sets status, Content-Type: application/json and the serialized value.
// Invalid UTF-8 in strings is replaced (U+FFFD), never thrown.
void write_json(response& res, int status, const nlohmann::json& value);

// write_json(res, status, {"error": message}).
void write_json_error(response& res, int status, std::string_view message);

}  // namespace sluice::http
