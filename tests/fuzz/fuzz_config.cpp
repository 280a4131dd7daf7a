// Fuzzes torwartd's configuration reading (TOML via toml++ and our strict key checking).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = torwart::ConfigReader::FromString(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  if (!r) return 0;
  torwart::server::ServerConfig cfg;
  (void)torwart::server::ReadConfig(*r, cfg);
  return 0;
}
