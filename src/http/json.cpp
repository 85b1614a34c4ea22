#include <sluice/http/json.hpp>

#include <string>

namespace sluice::http {

std::optional<nlohmann::json> read_json(const request& req, response& res) {
  if (req.body().empty()) {
    write_json_error(res, 400, "invalid JSON: empty body");
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(req.body());
  } catch (const nlohmann::json::parse_error& e) {
    // Where, not the parser's own words (which echo the input back).
    write_json_error(res, 400, "invalid JSON at byte " + std::to_string(e.byte));
  }
  return std::nullopt;
}

void write_json(response& res, int status, const nlohmann::json& value) {
  res.send(status, value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
           "application/json");
}

void write_json_error(response& res, int status, std::string_view message) {
  write_json(res, status, nlohmann::json{{"error", message}});
}

}  // namespace sluice::http
