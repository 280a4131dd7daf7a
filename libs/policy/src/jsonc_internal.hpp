// Internal: the JSONC parser with the error position as data, for the policy compiler.
#pragma once

#include <string>
#include <string_view>

#include "torwart/policy/jsonc.hpp"

namespace torwart::policy::detail {

struct JsoncFailure {
  Errc code = Errc::kParse;
  SourcePos pos;
  std::string message;
};

bool ParseJsoncDetailed(std::string_view text, const JsoncLimits& limits, Value& out,
                        JsoncFailure& failure);

}  // namespace torwart::policy::detail
