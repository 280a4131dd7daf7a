// Fuzzes the parser of everything devices publish on the control channel (the payload, and the
// topic from the first line of the input), and the broker plugin's state-file parser.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "device_message.hpp"
#include "plugin_state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nl = in.find('\n');
  std::string_view topic = nl == std::string_view::npos ? in : in.substr(0, nl);
  std::string_view payload = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  (void)torwart::server::ParseDeviceMessage(topic, payload);
  static const char* kTopics[] = {"torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/status",
                                  "torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/inventory",
                                  "torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/health",
                                  "torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/res",
                                  "torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/event"};
  (void)torwart::server::ParseDeviceMessage(kTopics[size % 5], in);
  // Agent events (torwart/d/<uuid>/event) get every input once more, whatever its size.
  (void)torwart::server::ParseDeviceMessage(kTopics[4], in);
  torwart::broker_plugin::State s;
  std::string error;
  (void)torwart::broker_plugin::ParseState(in, s, error);
  (void)torwart::broker_plugin::DeviceMayAccess("0f8fad5b-d9cb-469f-a165-70867728950e", topic,
                                                static_cast<int>(size % 9));
  return 0;
}
