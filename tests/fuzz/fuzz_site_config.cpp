// The gateway's site configuration (apps/torwart-agent/site_config.cpp): site.toml is written by
// the site operator and re-read on every stream.open, so a broken file must give a clear error,
// never a crash. Also the stream.open argument parser, which sees the server's commands. An
// accepted configuration must satisfy the invariants the agent relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "site_config.hpp"
#include "stream_decision.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto sc = torwart::agent::ParseSiteConfig(text, "site.toml");
  if (sc) {
    std::set<std::string> names;
    for (const auto& t : sc->targets) {
      if (t.name.empty() || t.host.empty() || t.port == 0 || !names.insert(t.name).second) {
        std::abort();
      }
      if (sc->Find(t.name) == nullptr) std::abort();
    }
    if (sc->max_streams < 1 || sc->max_streams > 1024) std::abort();
    if (sc->recording_quota < (uint64_t{1} << 20)) std::abort();
  } else if (sc.error().message().empty()) {
    std::abort();
  }
  (void)torwart::agent::ParseByteSize(text);
  (void)torwart::agent::ParseHostPort(text);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_discarded()) {
    auto r = torwart::agent::ParseStreamOpen(j, 1'800'000'000);
    if (r && (!torwart::agent::IsStreamIdText(r->stream) || r->relay_port == 0 ||
              r->deadline <= 1'800'000'000)) {
      std::abort();
    }
  }
  return 0;
}
