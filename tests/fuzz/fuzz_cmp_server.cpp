// Fuzzes the whole CMP server: DER parsing, protection checks and OpenSSL's request processing,
// against a CA in a temporary directory and a backend that knows every reference (secret =
// reference), so MAC-protected seeds from `openssl cmp -ref R -secret pass:R` go deep.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "torwart/core/clock.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/cmp_server.hpp"

using namespace torwart;

namespace {

class AllowAllBackend final : public pki::CmpBackend {
 public:
  Expected<pki::EnrollmentSecret> LookupReference(const std::string& reference) override {
    if (reference.empty()) return MakeError(Errc::kNotFound, "unknown");
    return pki::EnrollmentSecret{"00000000-0000-4000-8000-000000000001", reference};
  }
  Expected<void> ConsumeReference(const std::string&, const std::string&) override { return {}; }
  Expected<void> AuthorizeRenewal(const pki::DeviceIdentity&, const std::string&) override {
    return {};
  }
  Expected<void> RecordIssued(const std::string&, X509*, const std::string&) override { return {}; }
  Expected<void> Revoke(const pki::DeviceIdentity&, const std::string&, int) override { return {}; }
  std::chrono::seconds DeviceLifetime() override { return std::chrono::seconds(3600); }
};

struct World {
  AllowAllBackend backend;
  std::unique_ptr<pki::CertificateAuthority> ca;
  std::unique_ptr<pki::CmpServer> server;
};

World* g_world = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  char tmpl[] = "/tmp/torwart-fuzz-cmp-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (!dir) std::abort();
  g_world = new World();
  pki::CaSettings s;
  s.dir = std::filesystem::path(dir) / "pki";
  auto ca = pki::CertificateAuthority::OpenOrCreate(s, SystemClock::Instance());
  if (!ca) std::abort();
  g_world->ca = std::move(*ca);
  g_world->server = std::make_unique<pki::CmpServer>(*g_world->ca, g_world->backend,
                                                     SystemClock::Instance());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = g_world->server->Handle(std::string_view(reinterpret_cast<const char*>(data), size),
                                   "fuzz");
  if (r.http_status == 200 && r.der.empty()) __builtin_trap();  // a 200 must carry a response
  return 0;
}
