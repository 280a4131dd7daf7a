// Agent events (torwart/d/<uuid>/event, docs/design/control-channel.md "Agent events") become
// audit events `agent.<type>` with the device as actor. A per-device rate limit keeps a flood
// from one gateway from filling the audit store: the excess is counted into the next event.
// Thread-safe (one mutex); the registry calls it from its worker thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "context.hpp"
#include "device_message.hpp"

namespace torwart::server {

// The audit event for one agent event of device `d` (`m.kind` must be kEvent), received `now`.
// `suppressed_before` is how many events of this device were dropped by the rate limit since
// the last one recorded (0: the field is left out).
audit::Event MakeAgentAuditEvent(const storage::Device& d, const DeviceMessage& m, TimePoint now,
                                 int64_t suppressed_before);

class AgentEventAuditor {
 public:
  static constexpr int kPerDevicePerMinute = 300;
  explicit AgentEventAuditor(Context& ctx) : ctx_(ctx) {}
  // Audits the event unless the device is over its limit this minute. Returns true if an audit
  // event was written, false if it was counted as suppressed; an error if the audit failed.
  Expected<bool> Record(const storage::Device& d, const DeviceMessage& m);

 private:
  struct Window {
    TimePoint start{};
    int count = 0;
    int64_t suppressed = 0;
  };
  Context& ctx_;
  std::mutex mu_;
  std::map<std::string, Window> windows_;  // by device id; bounded by the registered devices
};

}  // namespace torwart::server
