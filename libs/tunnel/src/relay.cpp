// clang-format off
// <utility> must come before boost/asio/awaitable.hpp with Boost 1.74 and g++ 12.
#include <utility>
// clang-format on

#include "torwart/tunnel/relay.hpp"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positive on Asio's awaitable frame allocator (awaitable_frame_base's own
// operator new/delete pair) once a coroutine is inlined into co_spawn.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <openssl/err.h>
#include <openssl/x509.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "tls_io.hpp"
#include "torwart/core/log.hpp"
#include "torwart/tunnel/wire.hpp"

namespace torwart::tunnel {
namespace {

using namespace detail;  // NOLINT(google-build-using-namespace): private helpers of this library
using Clock = std::chrono::steady_clock;

constexpr auto kErrLinger = std::chrono::seconds(2);
constexpr auto kStopWait = std::chrono::seconds(5);
constexpr auto kMaxTimer = std::chrono::hours(24 * 365);

std::string CodeFor(const Error& e) {
  if (e.Is(Errc::kPermissionDenied)) return "forbidden";
  if (e.Is(Errc::kNotFound)) return "not_found";
  if (e.Is(Errc::kExpired)) return "expired";
  if (e.Is(Errc::kUnavailable)) return "unavailable";
  return "error";
}

// Until `tp` on the system clock, as a steady-clock duration (clamped).
Clock::duration Until(std::chrono::system_clock::time_point tp) {
  auto now = std::chrono::system_clock::now();
  if (tp <= now) return Clock::duration::zero();
  auto left = tp - now;
  if (left > kMaxTimer) return std::chrono::duration_cast<Clock::duration>(kMaxTimer);
  return std::chrono::duration_cast<Clock::duration>(left);
}

class RelayImpl;

// One TLS connection to the relay: a technician's or a gateway's leg.
struct LegConn {
  LegConn(RelayImpl* r, uint64_t leg_id, tcp::socket s, SslPtr ssl);
  ~LegConn();
  RelayImpl* relay;
  uint64_t id;
  std::string peer;
  std::string leaf_der;
  std::string early;  // bytes that followed the hello line
  FdTls tls;
};

struct RelayStream {
  RelayStream(const asio::any_io_executor& ex, StreamPlan p)
      : plan(std::move(p)), pair_timer(ex), deadline_timer(ex) {}
  const StreamPlan plan;
  std::shared_ptr<LegConn> tech, gw;
  asio::steady_timer pair_timer, deadline_timer;
  std::chrono::system_clock::time_point opened;
  std::atomic<bool> paired{false};
  std::atomic<uint64_t> up{0}, down{0};
  // I/O thread only.
  bool gw_claimed = false;
  bool ended = false;
  bool up_eof = false, down_eof = false;
  std::string first_eof;
};

class RelayImpl final : public Relay {
 public:
  RelayImpl(RelaySettings s, RelayHooks h) : s_(std::move(s)), h_(std::move(h)) {}
  ~RelayImpl() override { Stop(); }

  Expected<void> Start();
  uint16_t port() const override { return port_; }
  size_t Kill(const std::string& stream_id, const std::string& reason) override;
  size_t KillGrant(const std::string& grant_id, const std::string& reason) override;
  size_t KillDevice(const std::string& device_id, const std::string& reason) override;
  std::vector<LiveStream> List() const override;
  void Stop() override;

  void ForgetLeg(uint64_t id) {
    legs_.fetch_sub(1);
    std::lock_guard lock(mu_);
    legs_by_id_.erase(id);
  }

 private:
  template <class R>
  asio::awaitable<R> OnPool(std::function<R()> f);
  void Spawn(asio::awaitable<void> a);
  size_t KillWhere(const std::function<bool(const StreamPlan&)>& match, const std::string& reason);

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> HandleLeg(std::shared_ptr<LegConn> c);
  asio::awaitable<void> OnConnect(std::shared_ptr<LegConn> c);
  asio::awaitable<void> OnAccept(std::shared_ptr<LegConn> c, std::string stream_id);
  asio::awaitable<void> RunStream(std::shared_ptr<RelayStream> st);
  asio::awaitable<void> Pump(std::shared_ptr<RelayStream> st, bool up);
  asio::awaitable<void> SendErrAndClose(std::shared_ptr<LegConn> c, std::string line);
  // Ends a stream once: closes both legs (an ERR line first to an unpaired technician if
  // `tech_err` is set), drops it from the index and reports on_end on the pool.
  void End(const std::shared_ptr<RelayStream>& st, const std::string& reason,
           const std::string& tech_err = {});

  RelaySettings s_;
  RelayHooks h_;
  uint16_t port_ = 0;

  // Declared before the io_context: coroutine frames destroyed with it still touch these.
  mutable std::mutex mu_;
  TaskGroup tasks_{"relay"};
  bool started_ = false;
  bool stopping_ = false;
  uint64_t next_leg_ = 0;
  std::unordered_map<std::string, std::shared_ptr<RelayStream>> streams_;  // live, by id
  std::unordered_map<uint64_t, std::weak_ptr<LegConn>> legs_by_id_;
  std::atomic<size_t> legs_{0};

  asio::io_context ioc_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<asio::thread_pool> pool_;
  std::thread io_thread_;
};

LegConn::LegConn(RelayImpl* r, uint64_t leg_id, tcp::socket s, SslPtr ssl)
    : relay(r), id(leg_id), peer(PeerString(s)), tls(std::move(s), std::move(ssl)) {}

LegConn::~LegConn() { relay->ForgetLeg(id); }

// Not a coroutine itself. Callers pass a named std::function: GCC 12 destroys lambda temporaries
// with non-trivial captures twice when they appear inside a co_await expression.
template <class R>
asio::awaitable<R> RelayImpl::OnPool(std::function<R()> f) {
  auto task = [f = std::move(f)]() -> asio::awaitable<R> {
    try {
      co_return f();
    } catch (const std::exception& e) {
      co_return MakeError(Errc::kInternal, std::string("relay hook threw: ") + e.what());
    } catch (...) {
      co_return MakeError(Errc::kInternal, "relay hook threw");
    }
  };
  return asio::co_spawn(pool_->get_executor(), std::move(task), asio::use_awaitable);
}

void RelayImpl::Spawn(asio::awaitable<void> a) { tasks_.Spawn(ioc_, std::move(a)); }

Expected<void> RelayImpl::Start() {
  if (!s_.tls) return MakeError(Errc::kInvalidArgument, "relay: no TLS context");
  if (!h_.authorize || !h_.notify_gateway) {
    return MakeError(Errc::kInvalidArgument, "relay: authorize and notify_gateway are required");
  }
  if (s_.worker_threads < 1 || s_.max_streams < 1) {
    return MakeError(Errc::kInvalidArgument, "relay: worker_threads and max_streams must be >= 1");
  }
  auto endpoint = ParseListen(s_.listen);
  if (!endpoint) return MakeError(endpoint.error().WithContext("relay"));
  error_code ec;
  acceptor_.emplace(ioc_);
  acceptor_->open(endpoint->protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(*endpoint, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) port_ = acceptor_->local_endpoint(ec).port();
  if (ec) {
    acceptor_.reset();
    return MakeError(Errc::kUnavailable,
                     "relay: cannot listen on " + s_.listen + ": " + ec.message());
  }
  pool_.emplace(s_.worker_threads);
  work_.emplace(ioc_.get_executor());
  Spawn(AcceptLoop());
  io_thread_ = std::thread([this] {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        log::error("relay: io thread: {}", e.what());
      }
    }
  });
  std::lock_guard lock(mu_);
  started_ = true;
  return {};
}

void RelayImpl::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
  }
  asio::post(ioc_, [this] {
    error_code ignored;
    acceptor_->close(ignored);
    std::vector<std::shared_ptr<RelayStream>> all;
    std::vector<std::shared_ptr<LegConn>> legs;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, st] : streams_) all.push_back(st);
      for (auto& [id, weak] : legs_by_id_) {
        if (auto c = weak.lock()) legs.push_back(std::move(c));
      }
    }
    for (auto& st : all) End(st, "relay stopping");
    for (auto& c : legs) c->tls.Close();
  });
  tasks_.WaitIdle(kStopWait);
  work_.reset();
  ioc_.stop();
  if (io_thread_.joinable()) io_thread_.join();
  pool_->join();
  std::unordered_map<std::string, std::shared_ptr<RelayStream>> left;
  {
    std::lock_guard lock(mu_);
    left.swap(streams_);
  }
  left.clear();  // outside the lock: destroying a leg unregisters it (ForgetLeg)
}

size_t RelayImpl::KillWhere(const std::function<bool(const StreamPlan&)>& match,
                            const std::string& reason) {
  std::vector<std::shared_ptr<RelayStream>> victims;
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return 0;
    for (auto it = streams_.begin(); it != streams_.end();) {
      if (match(it->second->plan)) {
        victims.push_back(std::move(it->second));
        it = streams_.erase(it);
      } else {
        ++it;
      }
    }
  }
  size_t n = victims.size();
  if (n > 0) {
    asio::post(ioc_, [this, victims = std::move(victims), reason] {
      for (const auto& st : victims) {
        End(st, "killed: " + reason, FormatErr("killed", reason));
      }
    });
  }
  return n;
}

size_t RelayImpl::Kill(const std::string& stream_id, const std::string& reason) {
  return KillWhere([&](const StreamPlan& p) { return p.stream_id == stream_id; }, reason);
}

size_t RelayImpl::KillGrant(const std::string& grant_id, const std::string& reason) {
  return KillWhere([&](const StreamPlan& p) { return p.grant_id == grant_id; }, reason);
}

size_t RelayImpl::KillDevice(const std::string& device_id, const std::string& reason) {
  return KillWhere([&](const StreamPlan& p) { return p.device_id == device_id; }, reason);
}

std::vector<LiveStream> RelayImpl::List() const {
  std::lock_guard lock(mu_);
  std::vector<LiveStream> out;
  out.reserve(streams_.size());
  for (const auto& [id, st] : streams_) {
    LiveStream l;
    l.plan = st->plan;
    l.paired = st->paired.load();
    l.bytes_up = st->up.load();
    l.bytes_down = st->down.load();
    l.opened = st->opened;
    out.push_back(std::move(l));
  }
  return out;
}

void RelayImpl::End(const std::shared_ptr<RelayStream>& st, const std::string& reason,
                    const std::string& tech_err) {
  if (st->ended) return;
  st->ended = true;
  st->pair_timer.cancel();
  st->deadline_timer.cancel();
  {
    std::lock_guard lock(mu_);
    auto it = streams_.find(st->plan.stream_id);
    if (it != streams_.end() && it->second == st) streams_.erase(it);
  }
  bool paired = st->paired.load();
  if (st->tech) {
    if (!paired && !tech_err.empty()) {
      Spawn(SendErrAndClose(st->tech, tech_err));
    } else {
      st->tech->tls.Close();
    }
  }
  if (st->gw) st->gw->tls.Close();
  log::info("relay: stream {} ended: {} (up {} B, down {} B)", st->plan.stream_id, reason,
            st->up.load(), st->down.load());
  if (!h_.on_end) return;
  StreamEnd e;
  e.plan = st->plan;
  e.bytes_up = st->up.load();
  e.bytes_down = st->down.load();
  e.paired = paired;
  e.reason = reason;
  asio::post(*pool_, [this, e = std::move(e)] {
    try {
      h_.on_end(e);
    } catch (const std::exception& ex) {
      log::error("relay: on_end hook threw: {}", ex.what());
    } catch (...) {
      log::error("relay: on_end hook threw");
    }
  });
}

asio::awaitable<void> RelayImpl::AcceptLoop() {
  asio::steady_timer backoff(ioc_);
  for (;;) {
    tcp::socket socket(ioc_);
    error_code ec;
    co_await acceptor_->async_accept(socket, Redirect(ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      log::warn("relay: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(Redirect(ec));
      continue;
    }
    if (legs_.load() >= 2 * s_.max_streams) {
      log::warn("relay: refusing a connection: {} legs open (max_streams {})", legs_.load(),
                s_.max_streams);
      socket.close(ec);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    ERR_clear_error();
    SslPtr ssl(SSL_new(s_.tls.get()));
    if (!ssl) {
      log::error("relay: SSL_new failed");
      socket.close(ec);
      continue;
    }
    SSL_set_accept_state(ssl.get());
    std::shared_ptr<LegConn> c;
    {
      std::lock_guard lock(mu_);
      if (stopping_) co_return;
      legs_.fetch_add(1);
      uint64_t id = ++next_leg_;
      c = std::make_shared<LegConn>(this, id, std::move(socket), std::move(ssl));
      legs_by_id_.emplace(id, c);
    }
    Spawn(HandleLeg(std::move(c)));
  }
}

asio::awaitable<void> RelayImpl::SendErrAndClose(std::shared_ptr<LegConn> c, std::string line) {
  Watchdog wd(ioc_.get_executor());
  wd.Arm(kErrLinger, [c] { c->tls.Close(); });
  error_code ec;
  co_await c->tls.WriteAll(line, ec);
  if (!ec) co_await c->tls.ShutdownWrite(ec);
  // Read until the peer closes (bounded by the watchdog) so our close does not reset the
  // connection before the peer has read the line.
  char sink[512];
  while (!ec) co_await c->tls.ReadSome(sink, sizeof sink, ec);
  c->tls.Close();
}

asio::awaitable<void> RelayImpl::HandleLeg(std::shared_ptr<LegConn> c) {
  Watchdog wd(ioc_.get_executor());
  auto timed_out = std::make_shared<bool>(false);
  wd.Arm(s_.handshake_timeout, [c, timed_out] {
    *timed_out = true;
    c->tls.Close();
  });
  error_code ec;
  co_await c->tls.Handshake(ec);
  if (ec) {
    log::debug("relay: TLS handshake with {} failed: {}", c->peer,
               *timed_out ? "timeout" : ErrorText(ec));
    c->tls.Close();
    co_return;
  }
  c->leaf_der = PeerLeafDer(c->tls.ssl());
  bool too_long = false;
  std::string line = co_await ReadLine(c->tls, c->early, too_long, ec);
  wd.Disarm();
  if (ec) {
    log::debug("relay: no hello from {}: {}", c->peer, *timed_out ? "timeout" : ErrorText(ec));
    c->tls.Close();
    co_return;
  }
  if (too_long) {
    co_await SendErrAndClose(c, FormatErr("bad_request", "hello line too long"));
    co_return;
  }
  auto hello = ParseHello(line);
  if (!hello) {
    log::debug("relay: bad hello from {}: {}", c->peer, hello.error().message());
    co_await SendErrAndClose(c, FormatErr("bad_request", hello.error().message()));
    co_return;
  }
  if (c->leaf_der.empty()) {  // the context requires one; never trust that alone
    co_await SendErrAndClose(c, FormatErr("forbidden", "no client certificate"));
    co_return;
  }
  if (hello->kind == Hello::Kind::kConnect) {
    co_await OnConnect(std::move(c));
  } else {
    co_await OnAccept(std::move(c), hello->stream_id);
  }
}

asio::awaitable<void> RelayImpl::OnConnect(std::shared_ptr<LegConn> c) {
  Leg leg{c->peer, c->leaf_der};
  std::function<Expected<StreamPlan>()> authorize = [this, leg] { return h_.authorize(leg); };
  auto plan = co_await OnPool(std::move(authorize));
  if (!plan) {
    log::info("relay: CONNECT from {} refused: {}", c->peer, plan.error().message());
    co_await SendErrAndClose(c, FormatErr(CodeFor(plan.error()), plan.error().message()));
    co_return;
  }
  std::string().swap(c->leaf_der);  // not needed any more: keep idle legs small
  auto st = std::make_shared<RelayStream>(ioc_.get_executor(), std::move(*plan));
  st->tech = c;
  st->opened = std::chrono::system_clock::now();
  if (!IsStreamId(st->plan.stream_id) || st->plan.device_id.empty()) {
    log::error("relay: authorize returned a bad plan (stream '{}', device '{}')",
               st->plan.stream_id, st->plan.device_id);
    End(st, "internal error: bad stream plan", FormatErr("error", "internal error"));
    co_return;
  }
  bool duplicate = false, stopping = false;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
    if (!stopping) duplicate = !streams_.emplace(st->plan.stream_id, st).second;
  }
  if (stopping || duplicate) {
    End(st, stopping ? "relay stopping" : "internal error: duplicate stream id",
        FormatErr(stopping ? "unavailable" : "error",
                  stopping ? "the relay is stopping" : "duplicate stream id"));
    co_return;
  }
  if (Until(st->plan.deadline) == Clock::duration::zero()) {
    End(st, "grant expired", FormatErr("expired", "the grant has expired"));
    co_return;
  }
  std::weak_ptr<RelayStream> weak = st;
  st->deadline_timer.expires_after(Until(st->plan.deadline));
  st->deadline_timer.async_wait([this, weak](const error_code& ec) {
    auto s = weak.lock();
    if (!ec && s) End(s, "grant expired", FormatErr("expired", "the grant has expired"));
  });
  st->pair_timer.expires_after(s_.pair_timeout);
  st->pair_timer.async_wait([this, weak](const error_code& ec) {
    auto s = weak.lock();
    if (ec || !s || s->paired.load()) return;
    End(s, "pair timeout",
        FormatErr("unavailable", "the gateway did not connect within " +
                                     std::to_string(s_.pair_timeout.count()) + " ms"));
  });
  log::info("relay: stream {} for {} (grant {}, device {}) waiting for the gateway",
            st->plan.stream_id, c->peer, st->plan.grant_id, st->plan.device_id);
  std::function<Expected<void>()> notify = [this, plan = st->plan] {
    return h_.notify_gateway(plan);
  };
  auto notified = co_await OnPool(std::move(notify));
  if (!notified && !st->ended && !st->paired.load()) {
    End(st, "gateway not notified: " + notified.error().message(),
        FormatErr(CodeFor(notified.error()), notified.error().message()));
    co_return;
  }
  // Until paired, watch the waiting technician: leaving (or talking out of turn) ends the stream
  // now rather than at the pair timeout. Pairing cancels this wait before the OK line is sent,
  // so this never consumes stream bytes.
  error_code ec;
  while (!st->ended && !st->paired.load()) {
    co_await c->tls.WaitReadable(ec);
    if (st->ended || st->paired.load()) co_return;
    if (!ec) {
      char probe[256];
      size_t n = co_await c->tls.ReadSome(probe, sizeof probe, ec);
      if (st->ended || st->paired.load()) co_return;
      if (!ec && n > 0) {
        End(st, "technician sent data before the OK line",
            FormatErr("bad_request", "data before the OK line"));
        co_return;
      }
    }
    if (ec) {
      End(st, "technician left before pairing");
      co_return;
    }
  }
}

asio::awaitable<void> RelayImpl::OnAccept(std::shared_ptr<LegConn> c, std::string stream_id) {
  std::shared_ptr<RelayStream> st;
  {
    std::lock_guard lock(mu_);
    auto it = streams_.find(stream_id);
    if (it != streams_.end()) st = it->second;
  }
  if (!st || st->ended) {
    co_await SendErrAndClose(c, FormatErr("not_found", "no pending stream " + stream_id));
    co_return;
  }
  std::string cn = CommonNameOfDer(c->leaf_der);
  if (cn.empty() || cn != st->plan.device_id) {
    // Someone else's gateway (or a technician) guessing ids: refuse, keep the stream waiting.
    log::warn("relay: ACCEPT {} from {} with certificate CN '{}' refused (stream is for {})",
              stream_id, c->peer, cn, st->plan.device_id);
    co_await SendErrAndClose(c, FormatErr("forbidden", "this stream is for another gateway"));
    co_return;
  }
  if (st->gw_claimed) {
    co_await SendErrAndClose(c, FormatErr("conflict", "stream already accepted"));
    co_return;
  }
  st->gw_claimed = true;
  if (h_.accept_gateway) {
    Leg leg{c->peer, c->leaf_der};
    std::function<Expected<void>()> accept = [this, plan = st->plan, leg] {
      return h_.accept_gateway(plan, leg);
    };
    auto ok = co_await OnPool(std::move(accept));
    if (!ok) {
      log::info("relay: gateway {} refused for stream {}: {}", c->peer, stream_id,
                ok.error().message());
      End(st, "gateway refused: " + ok.error().message(),
          FormatErr("unavailable", "the gateway was refused: " + ok.error().message()));
      co_await SendErrAndClose(c, FormatErr(CodeFor(ok.error()), ok.error().message()));
      co_return;
    }
  }
  if (st->ended) {
    co_await SendErrAndClose(c, FormatErr("not_found", "stream " + stream_id + " has ended"));
    co_return;
  }
  std::string().swap(c->leaf_der);
  st->gw = c;
  st->paired = true;
  st->pair_timer.cancel();
  error_code ignored;
  st->tech->tls.socket().cancel(ignored);  // ends OnConnect's watch of the waiting technician
  co_await RunStream(std::move(st));
}

asio::awaitable<void> RelayImpl::RunStream(std::shared_ptr<RelayStream> st) {
  const std::string ok = FormatOk(st->plan.stream_id, st->plan.device_id);
  Watchdog wd(ioc_.get_executor());
  wd.Arm(s_.handshake_timeout, [this, st] { End(st, "a leg did not take the OK line"); });
  error_code ec;
  co_await st->gw->tls.WriteAll(ok, ec);
  if (!ec && !st->tech->early.empty()) {
    if (s_.copy_observer) s_.copy_observer(true, st->tech->early);
    co_await st->gw->tls.WriteAll(st->tech->early, ec);
    st->up += st->tech->early.size();
    std::string().swap(st->tech->early);
  }
  if (ec) {
    End(st, "gateway connection lost: " + ErrorText(ec));
    co_return;
  }
  co_await st->tech->tls.WriteAll(ok, ec);
  if (!ec && !st->gw->early.empty()) {
    if (s_.copy_observer) s_.copy_observer(false, st->gw->early);
    co_await st->tech->tls.WriteAll(st->gw->early, ec);
    st->down += st->gw->early.size();
    std::string().swap(st->gw->early);
  }
  if (ec) {
    End(st, "technician connection lost: " + ErrorText(ec));
    co_return;
  }
  wd.Disarm();
  if (st->ended) co_return;
  log::info("relay: stream {} paired", st->plan.stream_id);
  Spawn(Pump(st, true));
  Spawn(Pump(std::move(st), false));
}

asio::awaitable<void> RelayImpl::Pump(std::shared_ptr<RelayStream> st, bool up) {
  LegConn& from = up ? *st->tech : *st->gw;
  LegConn& to = up ? *st->gw : *st->tech;
  std::atomic<uint64_t>& counter = up ? st->up : st->down;
  // Only while bytes flow: an idle stream holds no copy buffer.
  std::unique_ptr<char[]> buf;
  error_code ec;
  bool write_failed = false;
  for (;;) {
    co_await from.tls.WaitReadable(ec);
    if (ec || st->ended) break;
    if (!buf) buf = std::make_unique_for_overwrite<char[]>(kCopyBuffer);
    size_t n = co_await from.tls.ReadSome(buf.get(), kCopyBuffer, ec);
    if (ec || st->ended) break;
    if (s_.copy_observer) s_.copy_observer(up, std::string_view(buf.get(), n));
    co_await to.tls.WriteAll(buf.get(), n, ec);
    if (ec) {
      write_failed = true;
      break;
    }
    counter += n;
    if (SSL_has_pending(from.tls.ssl()) != 1) buf.reset();
  }
  if (st->ended) co_return;
  const char* from_name = up ? "technician" : "gateway";
  const char* to_name = up ? "gateway" : "technician";
  if (!write_failed && IsEof(ec)) {
    // Half-close: pass the end on and keep the other direction until it ends as well.
    if (st->first_eof.empty()) st->first_eof = std::string("closed by ") + from_name;
    (up ? st->up_eof : st->down_eof) = true;
    error_code ignored;
    co_await to.tls.ShutdownWrite(ignored);
    if (st->up_eof && st->down_eof) End(st, st->first_eof);
    co_return;
  }
  End(st, std::string(write_failed ? to_name : from_name) + " connection lost: " + ErrorText(ec));
}

}  // namespace

Expected<std::unique_ptr<Relay>> Relay::Start(RelaySettings s, RelayHooks h) {
  auto relay = std::make_unique<RelayImpl>(std::move(s), std::move(h));
  if (auto ok = relay->Start(); !ok) return MakeError(ok.error());
  return std::unique_ptr<Relay>(std::move(relay));
}

Expected<net::SslCtxPtr> MakeRelayServerContext(const std::string& cert_chain_file,
                                                const std::string& key_file,
                                                const std::string& ca_file) {
  net::ServerTlsSettings settings;
  settings.cert_chain_file = cert_chain_file;
  settings.key_file = key_file;
  settings.request_client_cert = true;
  settings.client_ca_file = ca_file;
  auto made = net::MakeServerTlsContext(settings);
  if (!made) return MakeError(made.error().WithContext("relay TLS"));
  SSL_CTX* c = made->get();
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr) != 1) {
    return MakeError(Errc::kInvalidArgument,
                     "relay TLS: CA file " + ca_file + ": cannot load: " + net::OpenSslErrors());
  }
  // Unlike the HTTPS port, the relay verifies here: every leg must chain to our CA. Grant
  // certificates and device certificates are both clientAuth; the purpose check stays default.
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify_depth(c, 4);
  // No resumption: every leg authenticates afresh (and tickets would only cost memory).
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  return std::move(*made);
}

}  // namespace torwart::tunnel
