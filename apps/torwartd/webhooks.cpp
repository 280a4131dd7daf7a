#include "webhooks.hpp"

#include <sodium.h>

#include <algorithm>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"

namespace torwart::server {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

bool Subscribed(const WebhookConfig& w, const std::string& event) {
  if (w.events.empty()) return true;
  return std::any_of(w.events.begin(), w.events.end(), [&](const std::string& e) {
    if (e == "*" || e == event) return true;
    // "access.*" covers every access event.
    return e.size() > 2 && e.ends_with(".*") && event.rfind(e.substr(0, e.size() - 1), 0) == 0;
  });
}

// Full jitter on an exponential ceiling (2 s doubling up to 10 min), at least 1 s apart.
std::chrono::milliseconds RetryDelay(int attempts) {
  const int64_t base_ms = 2000, cap_ms = 600000;
  int64_t ceiling = base_ms << std::min(attempts, 20);
  ceiling = std::min(ceiling, cap_ms);
  return std::chrono::milliseconds(1000 + randombytes_uniform(static_cast<uint32_t>(ceiling)));
}

}  // namespace

std::string WebhookSignature(const std::string& secret, const std::string& body) {
  crypto_auth_hmacsha256_state st;
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(secret.data()),
                              secret.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(body.data()),
                                body.size());
  crypto_auth_hmacsha256_final(&st, mac);
  return "sha256=" + HexEncode(std::string_view(reinterpret_cast<char*>(mac), sizeof mac));
}

Expected<void> Webhooks::Publish(const std::string& event, const json& data) {
  if (ctx_.config == nullptr || ctx_.config->webhooks.empty()) return {};
  const TimePoint now = ctx_.clock->Now();
  bool queued = false;
  for (const auto& w : ctx_.config->webhooks) {
    if (!Subscribed(w, event)) continue;
    storage::OutboxItem item;
    item.url = w.url;
    item.event = event;
    item.body = json{{"id", NewUuid()}, {"event", event}, {"time", FormatRfc3339(now)},
                     {"data", data}}
                    .dump();
    item.created = now;
    item.next_attempt = now;
    auto r = ctx_.store->outbox().Enqueue(item);
    if (!r) {
      log::error("webhook {} for {}: could not queue: {}", event, w.url, r.error().message());
      return MakeError(r.error());
    }
    queued = true;
  }
  if (queued) {
    std::lock_guard lock(mu_);
    wake_ = true;
    cv_.notify_all();
  }
  return {};
}

const WebhookConfig* Webhooks::ConfigFor(const std::string& url) const {
  for (const auto& w : ctx_.config->webhooks) {
    if (w.url == url) return &w;
  }
  return nullptr;
}

void Webhooks::DeliverDue() {
  auto due = ctx_.store->outbox().Due(ctx_.clock->Now(), 50);
  if (!due) {
    log::error("webhooks: reading the outbox: {}", due.error().message());
    return;
  }
  for (auto& item : *due) {
    const WebhookConfig* w = ConfigFor(item.url);
    item.attempts++;
    if (w == nullptr) {
      // The receiver was removed from the configuration: give up on it.
      item.status = "failed";
      item.last_error = "webhook no longer configured";
      (void)ctx_.store->outbox().Record(item);
      continue;
    }
    size_t scheme_end = item.url.find("://");
    size_t path_start = item.url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
    http::ClientSettings cs;
    cs.base_url = path_start == std::string::npos ? item.url : item.url.substr(0, path_start);
    cs.ca_file = w->ca_file;
    cs.timeout = std::chrono::seconds(10);
    cs.max_response_bytes = 64 * 1024;
    std::string path = path_start == std::string::npos ? "/" : item.url.substr(path_start);
    http::Client client(cs);
    auto r = client.Send("POST", path,
                         {{"content-type", "application/json"},
                          {"user-agent", "torwartd-webhooks/0.1"},
                          {"x-torwart-event", item.event},
                          {"x-torwart-delivery", std::to_string(item.id)},
                          {"x-torwart-signature", WebhookSignature(w->secret, item.body)}},
                         item.body);
    if (r && r->status >= 200 && r->status < 300) {
      item.status = "delivered";
      item.last_error.clear();
    } else {
      item.last_error = r ? "HTTP " + std::to_string(r->status) : r.error().message();
      if (item.attempts >= ctx_.config->webhook_max_attempts) {
        item.status = "failed";
        log::error("webhook {} to {} failed for good after {} attempts: {}", item.event, item.url,
                   item.attempts, item.last_error);
      } else {
        item.next_attempt = ctx_.clock->Now() + RetryDelay(item.attempts - 1);
        log::warn("webhook {} to {} failed (attempt {}): {}; retrying", item.event, item.url,
                  item.attempts, item.last_error);
      }
    }
    if (auto rec = ctx_.store->outbox().Record(item); !rec) {
      log::error("webhooks: recording delivery {}: {}", item.id, rec.error().message());
    }
  }
}

void Webhooks::Start() {
  if (ctx_.config->webhooks.empty() || thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, 1s, [this] { return stopping_ || wake_; });
      if (stopping_) break;
      wake_ = false;
      lock.unlock();
      DeliverDue();
      lock.lock();
    }
  });
}

void Webhooks::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace torwart::server
