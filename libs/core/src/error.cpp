#include "torwart/core/error.hpp"

namespace torwart {
namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "torwart"; }
  std::string message(int c) const override {
    switch (static_cast<Errc>(c)) {
      case Errc::kOk: return "ok";
      case Errc::kInvalidArgument: return "invalid argument";
      case Errc::kNotFound: return "not found";
      case Errc::kAlreadyExists: return "already exists";
      case Errc::kUnauthenticated: return "unauthenticated";
      case Errc::kPermissionDenied: return "permission denied";
      case Errc::kFailedPrecondition: return "failed precondition";
      case Errc::kResourceExhausted: return "resource exhausted";
      case Errc::kUnavailable: return "unavailable";
      case Errc::kTimeout: return "timeout";
      case Errc::kExpired: return "expired";
      case Errc::kRevoked: return "revoked";
      case Errc::kParse: return "malformed input";
      case Errc::kIo: return "I/O error";
      case Errc::kInternal: return "internal error";
      case Errc::kDataLoss: return "data loss";
    }
    return "unknown error";
  }
};
}  // namespace

const std::error_category& TorwartCategory() noexcept {
  static const Category kCategory;
  return kCategory;
}

Error Error::WithContext(std::string_view context) const {
  std::string m(context);
  if (!message_.empty()) {
    m += ": ";
    m += message_;
  }
  return Error(code_, std::move(m));
}

std::string Error::String() const {
  if (message_.empty()) return code_.message();
  return message_;
}

}  // namespace torwart
