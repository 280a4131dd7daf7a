// Outgoing webhooks: events are queued in the database (outbox) and POSTed by one sender thread
// to every `[[webhooks]]` receiver subscribed to them, with retries and exponential backoff with
// jitter. Body: JSON {"id", "event", "time", "data"}; header X-Torwart-Signature:
// sha256=<hex HMAC-SHA256 of the body with the webhook's secret>. Thread-safe.
#pragma once

#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "context.hpp"

namespace torwart::server {

// "sha256=<hex>" of HMAC-SHA256(secret, body).
std::string WebhookSignature(const std::string& secret, const std::string& body);

class Webhooks {
 public:
  explicit Webhooks(Context& ctx) : ctx_(ctx) {}
  ~Webhooks() { Stop(); }

  // Queues the event for every subscribed receiver (durable: survives a restart) and wakes the
  // sender. An error means it could not be queued (callers audit and carry on: notifications are
  // not a security control).
  Expected<void> Publish(const std::string& event, const nlohmann::json& data);

  void Start();
  void Stop();
  // One pass over due deliveries (the sender thread calls this; tests may too).
  void DeliverDue();

 private:
  const WebhookConfig* ConfigFor(const std::string& url) const;

  Context& ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool wake_ = false;
  std::thread thread_;
};

}  // namespace torwart::server
