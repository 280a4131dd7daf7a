// What the gateway's end of a stream plugs into the byte pump: a protocol filter (the Modbus
// guard) on the technician → target direction, and a recorder that sees both directions.
// Both are called on the stream's I/O thread, one call at a time, and must not block.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace torwart::tunnel {

enum class Direction : uint8_t { kToTarget = 0, kFromTarget = 1 };

// One request the filter refused (answered itself instead of forwarding).
struct Refusal {
  uint16_t transaction = 0;
  uint8_t unit = 0;
  uint8_t function = 0;
  std::string reason;  // e.g. "function 6 needs scope modbus:write"
};

class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  struct Result {
    std::string forward;           // bytes for the target (whole frames only)
    std::string reply;             // bytes back to the technician (e.g. Modbus exception 01)
    std::vector<Refusal> refused;  // each is audited and recorded
    bool close = false;            // protocol violation: end the stream
    std::string close_reason;
  };
  // Bytes from the technician; the filter buffers partial frames itself.
  virtual Result OnClientData(std::string_view data) = 0;
};

class StreamRecorder {
 public:
  virtual ~StreamRecorder() = default;
  // Bytes as they crossed the gateway (kToTarget: what was forwarded, after the filter).
  virtual void OnData(Direction d, std::string_view data) = 0;
  // Things that happened: "refused" (detail: the Refusal as JSON), "open", "close".
  virtual void OnEvent(std::string_view type, std::string_view detail) = 0;
  // The stream ended; write the trailer. Called exactly once.
  virtual void Finish(std::string_view reason) = 0;
};

}  // namespace torwart::tunnel
