#include "demo.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::server {
namespace {

bool g_demo = false;
constexpr const char* kDemoDevice = "demo-gateway";

}  // namespace

void AddDemoOption(CLI::App& app) {
  app.add_flag("--demo", g_demo,
               "demo mode (make run): create device demo-gateway and write its one-time "
               "enrollment to <data-dir>/demo-enrollment.json");
}

Expected<void> SetUpDemoIfRequested(Context& ctx) {
  if (!g_demo) return {};
  std::string file = ctx.config->data_dir + "/demo-enrollment.json";
  std::error_code ec;
  std::filesystem::remove(file, ec);
  auto d = ctx.store->devices().GetByName(kDemoDevice);
  if (!d && !d.error().Is(Errc::kNotFound)) return MakeError(d.error());
  if (!d) {
    storage::Device nd;
    nd.id = NewUuid();
    nd.name = kDemoDevice;
    nd.site = "demo";
    nd.tags = {"demo"};
    nd.created = ctx.clock->Now();
    if (auto r = ctx.store->devices().Create(nd); !r) return MakeError(r.error());
    d = nd;
  }
  if (d->status != "registered") return {};  // enrolled (or revoked): nothing to hand out
  storage::Enrollment e;
  e.reference = "ref-" + HexEncode(RandomBytes(6));
  e.secret = RandomToken(18);
  e.device_id = d->id;
  e.created = ctx.clock->Now();
  e.expires = e.created + std::chrono::hours(1);
  if (auto r = ctx.store->enrollments().Create(e); !r) return MakeError(r.error());
  audit::Event ev = MakeSystemEvent(ctx, "device", "device.enrollment_secret");
  ev.target = kDemoDevice;
  ev.reason = "demo mode (--demo)";
  ev.details = nlohmann::json{{"device_id", d->id}, {"reference", e.reference}}.dump();
  if (auto r = Audit(ctx, ev); !r) return MakeError(r.error());
  nlohmann::json j{{"device", kDemoDevice},
                   {"device_id", d->id},
                   {"reference", e.reference},
                   {"secret", e.secret},
                   {"expires", FormatRfc3339(e.expires)}};
  if (auto r = pki::WriteFileAtomic(file, j.dump(2) + "\n", std::filesystem::perms(0600)); !r) {
    return MakeError(r.error());
  }
  log::info("demo mode: enrollment for {} written to {}", kDemoDevice, file);
  return {};
}

}  // namespace torwart::server
