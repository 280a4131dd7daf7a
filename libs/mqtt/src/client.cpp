// libmosquitto adapter. Why our own network thread instead of mosquitto_loop_start():
// loop_start runs mosquitto_loop_forever, which reconnects by itself with libmosquitto's fixed or
// exponential delay and no jitter. We run mosquitto_loop() in our own thread and decide every
// reconnect ourselves (net::Backoff, full jitter). Each connection attempt gets a fresh
// libmosquitto handle, so a new TLS context (renewed certificate) never meets stale handle state.
#include "torwart/mqtt/client.hpp"

#include <arpa/inet.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "torwart/core/log.hpp"
#include "torwart/net/backoff.hpp"

namespace torwart::mqtt {
namespace {

std::once_flag g_lib_init;

void InitLibrary() {
  std::call_once(g_lib_init, [] { mosquitto_lib_init(); });
}

struct PropsDeleter {
  void operator()(mosquitto_property* p) const { mosquitto_property_free_all(&p); }
};
using PropsPtr = std::unique_ptr<mosquitto_property, PropsDeleter>;

Expected<PropsPtr> BuildProperties(const Properties& in) {
  mosquitto_property* p = nullptr;
  auto fail = [&](const char* what) {
    mosquitto_property_free_all(&p);
    return MakeError(Errc::kInvalidArgument, std::string("MQTT property ") + what);
  };
  if (!in.response_topic.empty() &&
      mosquitto_property_add_string(&p, MQTT_PROP_RESPONSE_TOPIC, in.response_topic.c_str()) !=
          MOSQ_ERR_SUCCESS) {
    return fail("response topic");
  }
  if (!in.correlation_data.empty()) {
    if (in.correlation_data.size() > 65535) return fail("correlation data too long");
    if (mosquitto_property_add_binary(&p, MQTT_PROP_CORRELATION_DATA, in.correlation_data.data(),
                                      static_cast<uint16_t>(in.correlation_data.size())) !=
        MOSQ_ERR_SUCCESS) {
      return fail("correlation data");
    }
  }
  if (!in.content_type.empty() &&
      mosquitto_property_add_string(&p, MQTT_PROP_CONTENT_TYPE, in.content_type.c_str()) !=
          MOSQ_ERR_SUCCESS) {
    return fail("content type");
  }
  if (in.message_expiry && mosquitto_property_add_int32(&p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
                                                        *in.message_expiry) != MOSQ_ERR_SUCCESS) {
    return fail("message expiry");
  }
  for (auto& [k, v] : in.user_properties) {
    if (mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, k.c_str(), v.c_str()) !=
        MOSQ_ERR_SUCCESS) {
      return fail("user property");
    }
  }
  return PropsPtr(p);
}

Properties ReadProperties(const mosquitto_property* props) {
  Properties out;
  char* s = nullptr;
  if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &s, false) && s) {
    out.response_topic = s;
    free(s);
  }
  void* bin = nullptr;
  uint16_t len = 0;
  if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &bin, &len, false) && bin) {
    out.correlation_data.assign(static_cast<const char*>(bin), len);
    free(bin);
  }
  s = nullptr;
  if (mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &s, false) && s) {
    out.content_type = s;
    free(s);
  }
  uint32_t expiry = 0;
  if (mosquitto_property_read_int32(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &expiry, false)) {
    out.message_expiry = expiry;
  }
  char* k = nullptr;
  char* v = nullptr;
  const mosquitto_property* it =
      mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &k, &v, false);
  while (it) {
    out.user_properties.emplace_back(k ? k : "", v ? v : "");
    free(k);
    free(v);
    k = v = nullptr;
    it = mosquitto_property_read_string_pair(it, MQTT_PROP_USER_PROPERTY, &k, &v, true);
  }
  return out;
}

std::string MosqError(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::string("system error: ") + strerror(errno);
  if (rc == MOSQ_ERR_KEEPALIVE) return "no answer from the broker within the keepalive";
  return mosquitto_strerror(rc);
}

struct MosqDeleter {
  void operator()(mosquitto* m) const { mosquitto_destroy(m); }
};
using MosqPtr = std::unique_ptr<mosquitto, MosqDeleter>;

}  // namespace

std::string Url::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return std::string(tls ? "mqtts://" : "mqtt://") + h + ":" + std::to_string(port);
}

Expected<Url> ParseUrl(const std::string& url) {
  Url u;
  std::string rest;
  if (url.rfind("mqtts://", 0) == 0) {
    u.tls = true;
    u.port = 8883;
    rest = url.substr(8);
  } else if (url.rfind("mqtt://", 0) == 0) {
    u.tls = false;
    u.port = 1883;
    rest = url.substr(7);
  } else {
    return MakeError(Errc::kInvalidArgument,
                     "MQTT URL must start with mqtts:// or mqtt://: " + url);
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos || rest.find('@') != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "MQTT URL must be scheme://host[:port]: " + url);
  }
  std::string port_text;
  if (rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos)
      return MakeError(Errc::kInvalidArgument, "bad IPv6 literal: " + url);
    u.host = rest.substr(1, close - 1);
    std::string tail = rest.substr(close + 1);
    if (!tail.empty()) {
      if (tail.front() != ':') return MakeError(Errc::kInvalidArgument, "bad MQTT URL: " + url);
      port_text = tail.substr(1);
    }
  } else {
    auto colon = rest.rfind(':');
    if (colon != std::string::npos) {
      u.host = rest.substr(0, colon);
      port_text = rest.substr(colon + 1);
    } else {
      u.host = rest;
    }
  }
  if (u.host.empty()) return MakeError(Errc::kInvalidArgument, "MQTT URL without host: " + url);
  if (!port_text.empty() || (rest.back() == ':')) {
    if (port_text.empty() || port_text.size() > 5 ||
        port_text.find_first_not_of("0123456789") != std::string::npos) {
      return MakeError(Errc::kInvalidArgument, "bad port in MQTT URL: " + url);
    }
    int p = std::stoi(port_text);
    if (p < 1 || p > 65535)
      return MakeError(Errc::kInvalidArgument, "bad port in MQTT URL: " + url);
    u.port = p;
  }
  return u;
}

const char* StateName(State s) {
  switch (s) {
    case State::kStopped:
      return "stopped";
    case State::kConnecting:
      return "connecting";
    case State::kConnected:
      return "connected";
    case State::kWaiting:
      return "waiting";
  }
  return "unknown";
}

struct Client::Impl {
  ClientSettings settings;
  Url url;
  net::Backoff backoff;

  MessageHandler on_message;
  ConnectionHandler on_connection;

  // handle_mu guards `mosq` (swapped by the network thread between attempts) so that Publish
  // from other threads never sees a destroyed handle. It is never held during mosquitto_loop.
  mutable std::mutex handle_mu;
  MosqPtr mosq;

  mutable std::mutex mu;  // guards the fields below and the wake-up condition
  std::condition_variable cv;
  bool stop = false;
  bool reconnect_now = false;
  bool drop_now = false;  // SimulateNetworkLoss
  Stats stats;
  std::thread thread;
  std::atomic<State> state{State::kStopped};
  std::atomic<bool> connack_ok{false};
  int last_reason = 0;
  std::string last_reason_text;

  explicit Impl(ClientSettings s, Url u)
      : settings(std::move(s)),
        url(std::move(u)),
        backoff(settings.backoff_base, settings.backoff_cap, settings.backoff_seed) {}

  void SetState(State s, int reason_code = 0, std::string reason = {},
                std::chrono::milliseconds retry_in = {}) {
    state = s;
    int attempt;
    {
      std::lock_guard lock(mu);
      stats.state = s;
      if (!reason.empty() && s != State::kConnected) stats.last_error = reason;
      attempt = stats.attempt;
    }
    if (on_connection) {
      on_connection(ConnectionEvent{s, reason_code, std::move(reason), retry_in, attempt});
    }
  }

  static void OnConnect(mosquitto*, void* ud, int rc, int /*flags*/, const mosquitto_property*) {
    auto* self = static_cast<Impl*>(ud);
    if (rc == 0) {
      self->connack_ok = true;
      {
        std::lock_guard lock(self->mu);
        self->stats.connects++;
        self->stats.attempt = 0;
        self->stats.last_error.clear();
      }
      self->backoff.Reset();
      self->SetState(State::kConnected);
    } else {
      self->last_reason = rc;
      self->last_reason_text = std::string("refused by broker: ") + mosquitto_reason_string(rc);
    }
  }

  static void OnDisconnect(mosquitto*, void* ud, int rc, const mosquitto_property*) {
    auto* self = static_cast<Impl*>(ud);
    if (rc != 0 && self->last_reason == 0) {
      self->last_reason = rc;
      // libmosquitto passes either an MQTT 5 reason code (broker DISCONNECT) or an error.
      self->last_reason_text = rc < 128 ? MosqError(rc) : mosquitto_reason_string(rc);
    }
  }

  static void OnMessageCb(mosquitto*, void* ud, const mosquitto_message* m,
                          const mosquitto_property* props) {
    auto* self = static_cast<Impl*>(ud);
    if (!self->on_message || !m || !m->topic) return;
    Message msg;
    msg.topic = m->topic;
    if (m->payload && m->payloadlen > 0) {
      msg.payload.assign(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen));
    }
    msg.qos = m->qos;
    msg.retain = m->retain;
    msg.properties = ReadProperties(props);
    self->on_message(msg);
  }

  Expected<MosqPtr> NewHandle() {
    MosqPtr m(mosquitto_new(settings.client_id.c_str(), settings.clean_start, this));
    if (!m)
      return MakeError(Errc::kResourceExhausted, "mosquitto_new: " + MosqError(MOSQ_ERR_ERRNO));
    mosquitto_int_option(m.get(), MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_threaded_set(m.get(), true);
    mosquitto_connect_v5_callback_set(m.get(), &Impl::OnConnect);
    mosquitto_disconnect_v5_callback_set(m.get(), &Impl::OnDisconnect);
    mosquitto_message_v5_callback_set(m.get(), &Impl::OnMessageCb);
    if (!settings.username.empty()) {
      mosquitto_username_pw_set(m.get(), settings.username.c_str(), nullptr);
    }
    if (settings.will) {
      const Will& w = *settings.will;
      int rc = mosquitto_will_set_v5(m.get(), w.topic.c_str(), static_cast<int>(w.payload.size()),
                                     w.payload.data(), w.qos, w.retain, nullptr);
      if (rc != MOSQ_ERR_SUCCESS) {
        return MakeError(Errc::kInvalidArgument, "last will: " + MosqError(rc));
      }
    }
    if (url.tls) {
      auto ctx = settings.tls();
      if (!ctx) return MakeError(ctx.error().WithContext("TLS context"));
      // libmosquitto takes its own reference; ours is released when `ctx` goes out of scope.
      mosquitto_int_option(m.get(), MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
      int rc = mosquitto_void_option(m.get(), MOSQ_OPT_SSL_CTX, ctx->get());
      if (rc != MOSQ_ERR_SUCCESS)
        return MakeError(Errc::kInternal, "MOSQ_OPT_SSL_CTX: " + MosqError(rc));
    }
    return m;
  }

  // Waits up to `d` or until woken for stop/reconnect. Returns true if a reconnect was asked.
  bool Wait(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [&] { return stop || reconnect_now; });
    bool r = reconnect_now;
    reconnect_now = false;
    return r;
  }

  void Run() {
    using Clock = std::chrono::steady_clock;
    while (true) {
      {
        std::lock_guard lock(mu);
        if (stop) break;
        stats.connect_attempts++;
        stats.attempt++;
        drop_now = false;
        reconnect_now = false;
      }
      connack_ok = false;
      last_reason = 0;
      last_reason_text.clear();
      SetState(State::kConnecting);
      auto handle = NewHandle();
      int rc = MOSQ_ERR_SUCCESS;
      std::string error;
      if (!handle) {
        error = handle.error().message();
      } else {
        mosquitto* m = handle->get();
        {
          std::lock_guard lock(handle_mu);
          mosq = std::move(*handle);
        }
        ERR_clear_error();
        rc = mosquitto_connect_bind_async(m, url.host.c_str(), url.port,
                                          static_cast<int>(settings.keepalive.count()), nullptr);
        auto started = Clock::now();
        // Connection attempts time out with the keepalive, at least 5 s.
        auto connect_timeout =
            std::max<std::chrono::milliseconds>(settings.keepalive, std::chrono::seconds(5));
        bool clean_stop = false, reconnect = false;
        while (rc == MOSQ_ERR_SUCCESS) {
          rc = mosquitto_loop(m, 100, 1);
          if (rc != MOSQ_ERR_SUCCESS) break;
          bool s, r, d;
          {
            std::lock_guard lock(mu);
            s = stop;
            r = reconnect_now;
            d = drop_now;
          }
          if (s || r) {
            clean_stop = s;
            reconnect = r;
            break;
          }
          if (d) {
            // As if the cable was cut: no DISCONNECT, the broker publishes the will.
            int fd = mosquitto_socket(m);
            if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
            continue;
          }
          if (!connack_ok && last_reason != 0) {
            rc = MOSQ_ERR_CONN_REFUSED;
            break;
          }
          if (!connack_ok) {
            // libmosquitto 2.0.11 keeps "connecting" when the TCP connect under a pending TLS
            // handshake fails (SSL_ERROR_SYSCALL is treated as "try again"), so a refused
            // connection would only end at the keepalive. Ask the socket.
            // SO_ERROR may already have been consumed by OpenSSL's write; a dead socket still
            // polls as POLLERR/POLLHUP.
            int fd = mosquitto_socket(m), err = 0;
            socklen_t len = sizeof err;
            pollfd pfd{fd, POLLOUT, 0};
            bool dead = fd >= 0 && ::poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLHUP));
            if (fd >= 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
              dead = true;
            }
            if (dead) {
              last_reason_text =
                  std::string("connect: ") + (err ? strerror(err) : "connection refused or reset");
              rc = MOSQ_ERR_ERRNO;
              break;
            }
          }
          if (!connack_ok && Clock::now() - started > connect_timeout) {
            last_reason_text = "connection attempt timed out";
            rc = MOSQ_ERR_TLS_HANDSHAKE;  // any error: we only report last_reason_text
            break;
          }
        }
        if (clean_stop || reconnect) {
          if (connack_ok) {
            mosquitto_disconnect_v5(m, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
            for (int i = 0; i < 20 && mosquitto_loop(m, 50, 1) == MOSQ_ERR_SUCCESS; ++i) {
            }
          }
          rc = MOSQ_ERR_SUCCESS;
        } else {
          error = !last_reason_text.empty() ? last_reason_text : MosqError(rc);
          if (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE) {
            std::string ssl = net::OpenSslErrors();
            if (!ssl.empty()) error += " (" + ssl + ")";
          }
        }
        {
          std::lock_guard lock(handle_mu);
          mosq.reset();
        }
        if (clean_stop) break;
        if (reconnect) {
          backoff.Reset();
          {
            std::lock_guard lock(mu);
            stats.attempt = 0;
          }
          SetState(State::kWaiting, 0, "reconnecting on request", std::chrono::milliseconds(0));
          continue;
        }
      }
      if (!settings.auto_reconnect) {
        SetState(State::kWaiting, last_reason, error, std::chrono::milliseconds::max());
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || reconnect_now; });
        if (stop) break;
        reconnect_now = false;
        backoff.Reset();
        continue;
      }
      auto delay = backoff.Next();
      log::debug("mqtt {}: connection lost or failed ({}); retry in {} ms", settings.client_id,
                 error, delay.count());
      SetState(State::kWaiting, last_reason, error, delay);
      if (Wait(delay)) backoff.Reset();
    }
    SetState(State::kStopped);
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() { Stop(); }

Expected<std::unique_ptr<Client>> Client::Create(ClientSettings settings) {
  InitLibrary();
  auto url = ParseUrl(settings.url);
  if (!url) return MakeError(url.error());
  if (settings.client_id.empty() || settings.client_id.size() > 256) {
    return MakeError(Errc::kInvalidArgument, "MQTT client id must be 1-256 characters");
  }
  if (url->tls && !settings.tls) {
    return MakeError(Errc::kInvalidArgument, "mqtts:// needs a TLS context provider");
  }
  if (settings.keepalive < std::chrono::seconds(5) || settings.keepalive > std::chrono::hours(18)) {
    return MakeError(Errc::kInvalidArgument, "MQTT keepalive must be between 5 s and 18 h");
  }
  if (settings.backoff_base.count() <= 0 || settings.backoff_cap < settings.backoff_base) {
    return MakeError(Errc::kInvalidArgument, "backoff: need 0 < base <= cap");
  }
  auto impl = std::make_unique<Impl>(std::move(settings), std::move(*url));
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

void Client::OnMessage(MessageHandler h) { impl_->on_message = std::move(h); }
void Client::OnConnection(ConnectionHandler h) { impl_->on_connection = std::move(h); }

Expected<void> Client::Start() {
  std::lock_guard lock(impl_->mu);
  if (impl_->thread.joinable())
    return MakeError(Errc::kFailedPrecondition, "MQTT client already started");
  impl_->stop = false;
  impl_->thread = std::thread([impl = impl_.get()] { impl->Run(); });
  return {};
}

void Client::Stop() {
  std::thread t;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop = true;
    t = std::move(impl_->thread);
  }
  impl_->cv.notify_all();
  if (t.joinable()) t.join();
}

void Client::Reconnect() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->reconnect_now = true;
  }
  impl_->cv.notify_all();
}

void Client::SimulateNetworkLoss() {
  std::lock_guard lock(impl_->mu);
  impl_->drop_now = true;
}

Expected<void> Client::Publish(const std::string& topic, const std::string& payload,
                               const PublishOptions& o) {
  if (o.qos < 0 || o.qos > 2) return MakeError(Errc::kInvalidArgument, "qos must be 0, 1 or 2");
  if (payload.size() > 256u * 1024 * 1024)
    return MakeError(Errc::kInvalidArgument, "payload too large");
  auto props = BuildProperties(o.properties);
  if (!props) return MakeError(props.error());
  std::lock_guard lock(impl_->handle_mu);
  if (!impl_->mosq || impl_->state != State::kConnected) {
    return MakeError(Errc::kUnavailable, "MQTT not connected");
  }
  int rc = mosquitto_publish_v5(impl_->mosq.get(), nullptr, topic.c_str(),
                                static_cast<int>(payload.size()), payload.data(), o.qos, o.retain,
                                props->get());
  if (rc != MOSQ_ERR_SUCCESS) {
    return MakeError(rc == MOSQ_ERR_NO_CONN ? Errc::kUnavailable : Errc::kInvalidArgument,
                     "MQTT publish to " + topic + ": " + MosqError(rc));
  }
  return {};
}

Expected<void> Client::Subscribe(const std::string& filter, int qos) {
  std::lock_guard lock(impl_->handle_mu);
  if (!impl_->mosq) return MakeError(Errc::kUnavailable, "MQTT not connected");
  int rc = mosquitto_subscribe_v5(impl_->mosq.get(), nullptr, filter.c_str(), qos, 0, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return MakeError(rc == MOSQ_ERR_NO_CONN ? Errc::kUnavailable : Errc::kInvalidArgument,
                     "MQTT subscribe " + filter + ": " + MosqError(rc));
  }
  return {};
}

Expected<void> Client::Unsubscribe(const std::string& filter) {
  std::lock_guard lock(impl_->handle_mu);
  if (!impl_->mosq) return MakeError(Errc::kUnavailable, "MQTT not connected");
  int rc = mosquitto_unsubscribe_v5(impl_->mosq.get(), nullptr, filter.c_str(), nullptr);
  if (rc != MOSQ_ERR_SUCCESS)
    return MakeError(Errc::kUnavailable, "MQTT unsubscribe: " + MosqError(rc));
  return {};
}

State Client::state() const { return impl_->state; }

Stats Client::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats;
}

const ClientSettings& Client::settings() const { return impl_->settings; }

Expected<net::SslCtxPtr> MakeMqttTlsContext(const std::string& ca_file,
                                            const std::string& verify_host,
                                            const std::string& cert_chain_pem, EVP_PKEY* key) {
  net::ClientTlsSettings cs;
  cs.ca_file = ca_file;
  cs.verify_peer = true;
  auto ctx = net::MakeClientTlsContext(cs);
  if (!ctx) return ctx;
  SSL_CTX* c = ctx->get();
  if (!verify_host.empty()) {
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(c);
    unsigned char buf[16];
    bool is_ip = inet_pton(AF_INET, verify_host.c_str(), buf) == 1 ||
                 inet_pton(AF_INET6, verify_host.c_str(), buf) == 1;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, verify_host.c_str())
                   : X509_VERIFY_PARAM_set1_host(param, verify_host.c_str(), 0);
    if (ok != 1) return MakeError(Errc::kInvalidArgument, "cannot verify host " + verify_host);
  }
  if (!cert_chain_pem.empty()) {
    if (!key) return MakeError(Errc::kInvalidArgument, "client certificate without a key");
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(cert_chain_pem.data(), static_cast<int>(cert_chain_pem.size())), BIO_free);
    std::unique_ptr<X509, decltype(&X509_free)> leaf(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
    if (!leaf) return MakeError(Errc::kParse, "client certificate: " + net::OpenSslErrors());
    if (SSL_CTX_use_certificate(c, leaf.get()) != 1) {
      return MakeError(Errc::kInvalidArgument, "client certificate: " + net::OpenSslErrors());
    }
    while (X509* extra = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(c, extra) != 1) {
        X509_free(extra);
        return MakeError(Errc::kInvalidArgument, "client chain: " + net::OpenSslErrors());
      }
    }
    ERR_clear_error();  // PEM_read end-of-data
    if (SSL_CTX_use_PrivateKey(c, key) != 1 || SSL_CTX_check_private_key(c) != 1) {
      return MakeError(Errc::kInvalidArgument,
                       "client key does not match the certificate: " + net::OpenSslErrors());
    }
  }
  return ctx;
}

Expected<net::SslCtxPtr> MakeDeviceTlsContext(const std::string& ca_file,
                                              const std::string& cert_chain_pem, EVP_PKEY* key) {
  return MakeMqttTlsContext(ca_file, "", cert_chain_pem, key);
}

}  // namespace torwart::mqtt
