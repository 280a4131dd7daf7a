// Fuzzes the strict JSON body helpers every REST handler of torwartd uses.
#include <cstddef>
#include <cstdint>
#include <string>

#include "json_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  auto j = torwart::server::ParseBody(body, {"name", "site", "tags", "bind_machine", "reason"});
  if (!j) return 0;
  (void)torwart::server::StringField(*j, "name", true);
  (void)torwart::server::StringListField(*j, "tags");
  (void)torwart::server::BoolField(*j, "bind_machine", false);
  return 0;
}
