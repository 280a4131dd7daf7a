#include "torwart/core/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace torwart::log {

void Init(std::string_view level, bool json) {
  auto logger = spdlog::stderr_color_mt("torwart");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  if (json) {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
}

}  // namespace torwart::log
