// The agent's local API request parser (apps/torwart-agent/local_api.cpp): every line a local
// process writes to <state-dir>/agent.sock goes through ParseRequest. It must never crash, and an
// accepted request must have a known op and an args object.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "local_api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto r = torwart::agent::ParseRequest(line);
  if (r) {
    if (r->op.empty() || !r->args.is_object()) std::abort();
    (void)torwart::agent::OkResponse(*r, r->args);
  } else {
    (void)torwart::agent::ErrorResponse(nullptr, r.error().message());
  }
  return 0;
}
