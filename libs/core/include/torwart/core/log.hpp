// Logging facade for operators (not auditing: audit records go through audit::Sink).
// Thread-safe; backed by spdlog. Call Init once from main.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace torwart::log {

// level: trace|debug|info|warn|error|off. json: one JSON object per line instead of text.
void Init(std::string_view level, bool json = false);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;

}  // namespace torwart::log
