// libFuzzer target: the policy document is untrusted text (REST API, web editor, CLI).
// Parses and validates it (running its embedded tests); when it compiles, explains one query.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "torwart/policy/decision.hpp"
#include "torwart/policy/jsonc.hpp"
#include "torwart/policy/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto value = torwart::policy::ParseJsonc(text);
  (void)value;
  torwart::policy::CompileOptions options;
  options.limits.max_bytes = 1 << 20;
  torwart::policy::CompileResult result = torwart::policy::CompileDetailed(text, options);
  if (result.policy) {
    torwart::policy::AccessQuery q;
    q.user = "fuzz@x";
    q.target = "t";
    q.scope = "modbus:read";
    (void)torwart::policy::Explain(*result.policy, q);
    (void)torwart::policy::RunTests(*result.policy);
  }
  return 0;
}
