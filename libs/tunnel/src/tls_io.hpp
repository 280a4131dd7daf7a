// Private to libs/tunnel: coroutine TLS on top of Asio without asio::ssl, so the relay can keep an
// idle leg small (no per-stream buffers; OpenSSL's released with SSL_MODE_RELEASE_BUFFERS) and
// the endpoints can layer the inner TLS on the outer one with explicit half-close.
//  - FdTls: OpenSSL reads and writes the (non-blocking) socket itself; we wait for readiness.
//  - LayeredTls: OpenSSL over memory BIOs whose bytes travel over another ByteStream.
// Each object lives on one io_context thread; at most one read and one write in flight.
#pragma once

// clang-format off
// <utility> must come before boost/asio/awaitable.hpp with Boost 1.74 and g++ 12.
#include <utility>
// clang-format on

#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "torwart/core/error.hpp"
#include "torwart/core/log.hpp"

namespace torwart::tunnel::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

inline auto Redirect(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

inline constexpr size_t kCopyBuffer = 16 * 1024;

struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// "host:port" or "[v6]:port".
Expected<tcp::endpoint> ParseListen(const std::string& listen);
// "ip:port" of the remote end, "unknown" if closed.
std::string PeerString(const tcp::socket& s);
// DER of the peer's leaf certificate; empty without one.
std::string PeerLeafDer(const SSL* ssl);
// The subject CN of a DER certificate; empty if none or unparsable.
std::string CommonNameOfDer(const std::string& der);
// Text for an error_code from these streams (OpenSSL reasons included).
std::string ErrorText(const error_code& ec);
bool IsEof(const error_code& ec);

// A condition variable for coroutines on one thread: Wait() suspends until Notify().
class AsyncSignal {
 public:
  explicit AsyncSignal(const asio::any_io_executor& ex) : timer_(ex) {
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  asio::awaitable<void> Wait() {
    error_code ec;
    co_await timer_.async_wait(Redirect(ec));
  }
  void Notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

// Calls `fire` once if not disarmed within `after`. A completion already queued when Disarm()
// runs is ignored too, so `fire` never runs after Disarm().
class Watchdog {
 public:
  explicit Watchdog(const asio::any_io_executor& ex) : timer_(ex) {}
  ~Watchdog() { Disarm(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void Arm(std::chrono::steady_clock::duration after, std::function<void()> fire) {
    Disarm();
    armed_ = std::make_shared<bool>(true);
    timer_.expires_after(after);
    timer_.async_wait([armed = armed_, fire = std::move(fire)](const error_code& ec) {
      if (!ec && *armed) {
        *armed = false;
        fire();
      }
    });
  }
  void Disarm() {
    if (armed_) *armed_ = false;
    armed_.reset();
    timer_.cancel();
  }

 private:
  asio::steady_timer timer_;
  std::shared_ptr<bool> armed_;
};

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // At least one byte, or 0 with ec set (asio::error::eof at a clean end).
  virtual asio::awaitable<size_t> ReadSome(char* buf, size_t n, error_code& ec) = 0;
  virtual asio::awaitable<void> WriteAll(const char* buf, size_t n, error_code& ec) = 0;
  // Tells the peer we will send no more (TLS close_notify; TCP FIN for FdTls).
  virtual asio::awaitable<void> ShutdownWrite(error_code& ec) = 0;
  // Abrupt: the socket is closed, waiting operations complete with an error.
  virtual void Close() = 0;
  asio::awaitable<void> WriteAll(std::string_view s, error_code& ec) {
    co_await WriteAll(s.data(), s.size(), ec);
  }
};

struct SockBio;

class FdTls final : public ByteStream {
 public:
  // The SSL must be new; it is attached to the socket's descriptor here.
  FdTls(tcp::socket socket, SslPtr ssl);
  ~FdTls() override;
  asio::awaitable<void> Handshake(error_code& ec);
  // Completes when data can be read without waiting (nothing is consumed): lets an idle reader
  // wait without holding a buffer.
  asio::awaitable<void> WaitReadable(error_code& ec);
  asio::awaitable<size_t> ReadSome(char* buf, size_t n, error_code& ec) override;
  asio::awaitable<void> WriteAll(const char* buf, size_t n, error_code& ec) override;
  using ByteStream::WriteAll;
  asio::awaitable<void> ShutdownWrite(error_code& ec) override;
  void Close() override;
  SSL* ssl() const { return ssl_.get(); }
  tcp::socket& socket() { return socket_; }
  bool is_open() const { return socket_.is_open(); }

 private:
  template <class Op>
  asio::awaitable<int> Drive(Op op, error_code& ec);
  tcp::socket socket_;
  std::unique_ptr<SockBio> bio_state_;  // outlives ssl_ (declared before it)
  SslPtr ssl_;
  bool failed_ = false;  // a fatal TLS error: no close_notify any more
  bool shut_ = false;
};

class LayeredTls final : public ByteStream {
 public:
  // `lower` must outlive this object; `early` are bytes already read from it that belong here.
  LayeredTls(ByteStream& lower, SslPtr ssl, const asio::any_io_executor& ex,
             std::string_view early);
  asio::awaitable<void> Handshake(error_code& ec);
  asio::awaitable<size_t> ReadSome(char* buf, size_t n, error_code& ec) override;
  asio::awaitable<void> WriteAll(const char* buf, size_t n, error_code& ec) override;
  using ByteStream::WriteAll;
  asio::awaitable<void> ShutdownWrite(error_code& ec) override;
  void Close() override;
  SSL* ssl() const { return ssl_.get(); }

 private:
  template <class Op>
  asio::awaitable<int> Drive(Op op, bool may_read, error_code& ec);
  asio::awaitable<void> Flush(error_code& ec);
  ByteStream& lower_;
  SslPtr ssl_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  AsyncSignal flushed_;
  std::string flush_buf_;  // used by the one flusher at a time
  bool flushing_ = false;
  bool failed_ = false;
  bool shut_ = false;
  bool closed_ = false;
};

// Reads one '\n'-terminated line of at most kMaxLine bytes. Bytes after the line go to `rest`.
// `too_long` is set (and ec left clear) when no '\n' came within the limit.
asio::awaitable<std::string> ReadLine(ByteStream& s, std::string& rest, bool& too_long,
                                      error_code& ec);

// Coroutines spawned on one io_context, counted so that a Stop can wait (bounded) for them all
// to finish; an exception escaping one is logged, never rethrown into the io thread.
class TaskGroup {
 public:
  explicit TaskGroup(const char* name) : name_(name) {}
  void Spawn(asio::io_context& ioc, asio::awaitable<void> a) {
    {
      std::lock_guard lock(mu_);
      ++count_;
    }
    asio::co_spawn(ioc, std::move(a), [this](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("{}: task failed: {}", name_, ex.what());
        } catch (...) {
          log::error("{}: task failed", name_);
        }
      }
      std::lock_guard lock(mu_);
      --count_;
      cv_.notify_all();
    });
  }
  // Waits up to `timeout` for every task to finish; logs how many are left if they did not.
  void WaitIdle(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [this] { return count_ == 0; })) {
      log::warn("{}: {} task(s) still running at stop (hooks blocking?)", name_, count_);
    }
  }

 private:
  const char* name_;
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

}  // namespace torwart::tunnel::detail
