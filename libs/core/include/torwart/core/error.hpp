// Error values for every torwart library: an error_code plus human context.
// `torwart::Expected<T>` is std::expected<T, Error> (or a small compatible fallback where the
// standard library lacks <expected>, e.g. clang 14 building fuzz targets). Value types; not shared.
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#if __has_include(<expected>)
#include <expected>
#endif

namespace torwart {

// Common error conditions; libraries may define their own categories as well.
enum class Errc {
  kOk = 0,
  kInvalidArgument = 1,   // bad input from a caller, file or peer
  kNotFound,              // no such object
  kAlreadyExists,         // unique key taken
  kUnauthenticated,       // who you are is not established
  kPermissionDenied,      // who you are is not allowed
  kFailedPrecondition,    // state does not allow it (used secret, revoked device, ...)
  kResourceExhausted,     // too big, too many, disk full
  kUnavailable,           // peer or dependency not reachable; retry may help
  kTimeout,               // deadline exceeded
  kExpired,               // certificate, grant, token past its end
  kRevoked,               // certificate or grant revoked
  kParse,                 // malformed data
  kIo,                    // file system or database failure
  kInternal,              // broken invariant of our own
  kDataLoss,              // stored data damaged or tampered with (hash chain, signature)
};

const std::error_category& TorwartCategory() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), TorwartCategory()};
}

class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}
  Error(Errc code, std::string message) : Error(make_error_code(code), std::move(message)) {}

  const std::error_code& code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  bool Is(Errc e) const noexcept { return code_ == make_error_code(e); }

  // Prefixes context, e.g. Error("no such file").WithContext("loading policy").
  Error WithContext(std::string_view context) const;
  // "context: message (category: code text)".
  std::string String() const;

 private:
  std::error_code code_;
  std::string message_;
};

}  // namespace torwart

namespace std {
template <>
struct is_error_code_enum<torwart::Errc> : true_type {};
}  // namespace std

#if defined(__cpp_lib_expected) && __cpp_lib_expected >= 202202L
namespace torwart {
template <class T>
using Expected = std::expected<T, Error>;
using Unexpected = std::unexpected<Error>;
}  // namespace torwart
#else
#include "torwart/core/expected_fallback.hpp"
#endif

namespace torwart {
// Shorthand: `return MakeError(Errc::kNotFound, "device {} unknown")`.
inline Unexpected MakeError(Errc code, std::string message) {
  return Unexpected(Error(code, std::move(message)));
}
inline Unexpected MakeError(Error e) { return Unexpected(std::move(e)); }
}  // namespace torwart
