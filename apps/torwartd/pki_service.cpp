#include "pki_service.hpp"

#include <openssl/err.h>

#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/cmp_server.hpp"
#include "torwart/pki/est.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::server {
namespace {

using http::Request;
using http::Response;
using nlohmann::json;

constexpr size_t kMaxCmpBytes = 64 << 10;
constexpr size_t kMaxEstBytes = 64 << 10;

// Header values must not carry CR/LF or non-ASCII bytes from error texts.
std::string SanitizeHeader(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 200)) out.push_back(c >= 0x20 && c < 0x7f ? c : ' ');
  return out;
}

struct ReasonName {
  const char* name;
  int code;
};
constexpr ReasonName kReasons[] = {
    {"unspecified", 0},          {"keyCompromise", 1},        {"cACompromise", 2},
    {"affiliationChanged", 3},   {"superseded", 4},           {"cessationOfOperation", 5},
    {"certificateHold", 6},      {"privilegeWithdrawn", 9},   {"aACompromise", 10},
};

class PkiServiceImpl final : public PkiService, public pki::CmpBackend {
 public:
  explicit PkiServiceImpl(Context& ctx) : ctx_(ctx) {}

  Expected<void> Init() {
    pki::CaSettings s;
    s.dir = ctx_.config->data_dir + "/pki";
    s.organisation = ctx_.config->organisation;
    s.device_lifetime = ctx_.config->device_lifetime;
    auto ca = pki::CertificateAuthority::OpenOrCreate(s, *ctx_.clock);
    if (!ca) return MakeError(ca.error());
    ca_ = std::move(*ca);
    auto files = ca_->EnsureServerCertificate(ctx_.config->public_names);
    if (!files) return MakeError(files.error().WithContext("server certificate"));
    server_cert_ = files->cert_chain.string();
    server_key_ = files->key.string();
    chain_file_ = (s.dir / "chain.pem").string();
    cmp_ = std::make_unique<pki::CmpServer>(*ca_, *this, *ctx_.clock);
    return RefreshCrl(true);
  }

  std::string server_cert_file() const override { return server_cert_; }
  std::string server_key_file() const override { return server_key_; }
  std::string ca_chain_file() const override { return chain_file_; }

  void RegisterRoutes(http::Router& router) override {
    router.Add("GET", "/pki/crl", [this](const Request&) {
      std::lock_guard lock(crl_mu_);
      Response r;
      r.content_type = "application/pkix-crl";
      r.body = crl_der_;
      return r;
    });
    router.Add("GET", "/pki/ca", [this](const Request&) {
      Response r;
      r.content_type = "application/x-pem-file";
      r.body = ca_->ChainPem();
      return r;
    });
    auto cmp = [this](const Request& req) { return HandleCmp(req); };
    router.Add("POST", "/.well-known/cmp", cmp);
    router.Add("POST", "/.well-known/cmp/p/{label}", cmp);
    router.Add("GET", "/.well-known/est/cacerts", [this](const Request&) {
      Response r;
      r.content_type = pki::kEstCertsContentType;
      r.headers["Content-Transfer-Encoding"] = "base64";
      r.body = *pki::EncodeCertsOnly({ca_->issuing(), ca_->root()});
      return r;
    });
    router.Add("POST", "/.well-known/est/simpleenroll",
               [this](const Request& req) { return HandleEstEnroll(req); });
    router.Add("POST", "/.well-known/est/simplereenroll",
               [this](const Request& req) { return HandleEstReenroll(req); });
  }

  // --- CmpBackend (also used by EST) ---
  Expected<pki::EnrollmentSecret> LookupReference(const std::string& reference) override {
    auto e = ctx_.store->enrollments().Get(reference);
    if (!e) return MakeError(Errc::kUnauthenticated, "unknown enrollment reference");
    if (e->used) return MakeError(Errc::kFailedPrecondition, "enrollment secret already used");
    if (e->expires <= ctx_.clock->Now()) {
      return MakeError(Errc::kExpired, "enrollment secret expired");
    }
    auto d = ctx_.store->devices().GetById(e->device_id);
    if (!d) return MakeError(Errc::kNotFound, "device of this enrollment no longer exists");
    if (d->status == "revoked") return MakeError(Errc::kRevoked, "device is revoked");
    return pki::EnrollmentSecret{e->device_id, e->secret};
  }

  Expected<void> ConsumeReference(const std::string& reference,
                                  const std::string& fingerprint) override {
    auto e = ctx_.store->enrollments().Get(reference);
    if (!e) return MakeError(Errc::kUnauthenticated, "unknown enrollment reference");
    if (auto r = ctx_.store->enrollments().Consume(reference, ctx_.clock->Now()); !r) {
      if (r.error().Is(Errc::kFailedPrecondition)) {
        return MakeError(Errc::kFailedPrecondition, "enrollment secret already used");
      }
      return MakeError(r.error().WithContext("enrollment secret"));
    }
    auto d = ctx_.store->devices().GetById(e->device_id);
    if (!d) return MakeError(d.error());
    if (d->bind_machine) {
      if (fingerprint.empty()) {
        return MakeError(Errc::kFailedPrecondition,
                         "device requires machine binding but the request carries no machine "
                         "fingerprint (use torwart-agent enroll --bind-machine)");
      }
      d->machine_fingerprint = fingerprint;
      if (auto r = ctx_.store->devices().Update(*d); !r) return r;
    }
    return {};
  }

  Expected<void> AuthorizeRenewal(const pki::DeviceIdentity& current,
                                  const std::string& fingerprint) override {
    auto d = ctx_.store->devices().GetById(current.uuid);
    if (!d) return MakeError(Errc::kUnauthenticated, "unknown device");
    if (d->status == "revoked") return MakeError(Errc::kRevoked, "device is revoked");
    auto c = ctx_.store->certificates().GetBySerial(current.serial);
    if (!c) return MakeError(Errc::kUnauthenticated, "certificate unknown to this server");
    if (c->device_id != d->id) return MakeError(Errc::kPermissionDenied, "certificate belongs to another device");
    if (c->status == "revoked") return MakeError(Errc::kRevoked, "certificate is revoked");
    if (d->bind_machine && fingerprint != d->machine_fingerprint) {
      return MakeError(Errc::kPermissionDenied,
                       "machine binding: renewal from another machine is refused");
    }
    return {};
  }

  Expected<void> RecordIssued(const std::string& device_id, X509* cert,
                              const std::string& fingerprint) override {
    storage::Certificate c;
    c.serial = pki::SerialHex(cert);
    c.device_id = device_id;
    c.subject = pki::SubjectOneLine(cert);
    c.not_before = pki::NotBefore(cert);
    c.not_after = pki::NotAfter(cert);
    auto pem = pki::CertToPem(cert);
    if (!pem) return MakeError(pem.error());
    c.pem = *pem;
    c.fingerprint = fingerprint;
    if (auto r = ctx_.store->certificates().Insert(c); !r) return r;
    auto d = ctx_.store->devices().GetById(device_id);
    if (d && d->status == "registered") {
      d->status = "enrolled";
      (void)ctx_.store->devices().Update(*d);
    }
    NotifyCertificatesChanged();
    return {};
  }

  Expected<void> Revoke(const pki::DeviceIdentity& requester, const std::string& serial,
                        int reason) override {
    auto c = ctx_.store->certificates().GetBySerial(serial);
    if (!c) return MakeError(Errc::kNotFound, "certificate " + serial + " unknown");
    if (c->device_id != requester.uuid) {
      return MakeError(Errc::kPermissionDenied, "a device may only revoke its own certificates");
    }
    if (auto r = ctx_.store->certificates().Revoke(serial, reason, ctx_.clock->Now()); !r) return r;
    NotifyCertificatesChanged();
    return RefreshCrl(true);
  }

  std::chrono::seconds DeviceLifetime() override { return ctx_.config->device_lifetime; }

  // --- PkiService ---
  Expected<std::string> IssueGrantCertificate(const std::string& csr_pem,
                                              const pki::GrantClaims& claims) override {
    if (csr_pem.size() > 64 * 1024) return MakeError(Errc::kInvalidArgument, "CSR too large");
    auto csr = pki::CsrFromPem(csr_pem);
    if (!csr) return MakeError(Errc::kInvalidArgument, "not a PEM CSR: " + csr.error().message());
    EVP_PKEY* pub = X509_REQ_get0_pubkey(csr->get());
    if (pub == nullptr || X509_REQ_verify(csr->get(), pub) != 1) {
      ERR_clear_error();
      return MakeError(Errc::kInvalidArgument, "CSR signature does not verify");
    }
    auto cert = ca_->IssueGrantCertificate(pub, claims);
    if (!cert) return MakeError(cert.error());
    if (auto r = RecordIssued("grant:" + claims.grant_id, cert->get(), ""); !r) {
      return MakeError(r.error());
    }
    auto leaf = pki::CertToPem(cert->get());
    auto issuing = pki::CertToPem(ca_->issuing());
    if (!leaf || !issuing) return MakeError(Errc::kInternal, "encoding grant certificate");
    return *leaf + *issuing;
  }

  Expected<int> RevokeGrantCertificates(const std::string& grant_id) override {
    auto certs = ctx_.store->certificates().ListForDevice("grant:" + grant_id);
    if (!certs) return MakeError(certs.error());
    int n = 0;
    TimePoint now = ctx_.clock->Now();
    for (auto& c : *certs) {
      if (c.status == "revoked") continue;
      if (auto r = ctx_.store->certificates().Revoke(c.serial, pki::kReasonCessationOfOperation,
                                                     now);
          !r) {
        return MakeError(r.error());
      }
      ++n;
    }
    if (n == 0) return 0;
    NotifyCertificatesChanged();
    if (auto r = RefreshCrl(true); !r) return MakeError(r.error());
    return n;
  }

  Expected<int> RevokeDevice(const storage::Device& d, int reason_code) override {
    auto certs = ctx_.store->certificates().ListForDevice(d.id);
    if (!certs) return MakeError(certs.error());
    int n = 0;
    TimePoint now = ctx_.clock->Now();
    for (auto& c : *certs) {
      if (c.status == "revoked") continue;
      if (auto r = ctx_.store->certificates().Revoke(c.serial, reason_code, now); !r) {
        return MakeError(r.error());
      }
      ++n;
    }
    if (auto r = ctx_.store->enrollments().CancelForDevice(d.id, now); !r) return MakeError(r.error());
    storage::Device upd = d;
    upd.status = "revoked";
    if (auto r = ctx_.store->devices().Update(upd); !r) return MakeError(r.error());
    NotifyCertificatesChanged();
    if (auto r = RefreshCrl(true); !r) return MakeError(r.error());
    return n;
  }

  Expected<void> RefreshCrl(bool force) override {
    std::lock_guard lock(crl_mu_);
    TimePoint now = ctx_.clock->Now();
    if (!force && !crl_der_.empty() && now < crl_generated_ + ctx_.config->crl_validity / 2) {
      return {};
    }
    auto revoked = ctx_.store->certificates().ListRevoked(now);
    if (!revoked) return MakeError(revoked.error());
    std::vector<pki::RevokedEntry> entries;
    for (auto& c : *revoked) {
      entries.push_back({c.serial, c.revoked_at.value_or(now), c.revocation_reason});
    }
    auto number = ctx_.store->kv().Increment("crl_number");
    if (!number) return MakeError(number.error());
    auto der = ca_->MakeCrlDer(entries, *number, ctx_.config->crl_validity);
    if (!der) return MakeError(der.error());
    auto w = pki::WriteFileAtomic(std::filesystem::path(ctx_.config->data_dir) / "pki" / "crl.der",
                                  *der, std::filesystem::perms(0644));
    if (!w) return MakeError(w.error());
    crl_der_ = std::move(*der);
    crl_generated_ = now;
    log::info("CRL #{} published with {} revoked certificate(s)", *number, entries.size());
    return {};
  }

  void OnCertificatesChanged(std::function<void()> hook) override {
    std::lock_guard lock(hook_mu_);
    certificates_changed_ = std::move(hook);
  }

  Expected<ServiceCredentials> IssueServiceCertificate(std::chrono::seconds lifetime) override {
    auto key = pki::GenerateP256Key();
    if (!key) return MakeError(key.error());
    auto cert = ca_->IssueDeviceCertificate(key->get(), NewUuid(), lifetime, "");
    if (!cert) return MakeError(cert.error().WithContext("service certificate"));
    auto leaf = pki::CertToPem(cert->get());
    auto issuing = pki::CertToPem(ca_->issuing());
    auto key_pem = pki::PrivateKeyToPem(key->get());
    if (!leaf || !issuing || !key_pem) return MakeError(Errc::kInternal, "encoding service certificate");
    ServiceCredentials out;
    out.cert_chain_pem = *leaf + *issuing;
    out.key_pem = *key_pem;
    out.sha256_hex = pki::CertSha256Hex(cert->get());
    out.serial = pki::SerialHex(cert->get());
    out.not_after = pki::NotAfter(cert->get());
    return out;
  }

  Expected<pki::DeviceIdentity> AuthenticateDevice(std::string_view client_cert_der) override {
    if (client_cert_der.empty()) {
      return MakeError(Errc::kUnauthenticated, "a device certificate (TLS client auth) is required");
    }
    auto cert = pki::CertFromDer(client_cert_der);
    if (!cert) return MakeError(Errc::kUnauthenticated, "unreadable client certificate");
    auto id = ca_->VerifyDeviceCertificate(cert->get());
    if (!id) return MakeError(Errc::kUnauthenticated, id.error().message());
    auto d = ctx_.store->devices().GetById(id->uuid);
    if (!d) return MakeError(Errc::kUnauthenticated, "unknown device");
    if (d->status == "revoked") return MakeError(Errc::kRevoked, "device is revoked");
    auto c = ctx_.store->certificates().GetBySerial(id->serial);
    if (!c) return MakeError(Errc::kUnauthenticated, "certificate unknown to this server");
    if (c->device_id != d->id) {
      return MakeError(Errc::kPermissionDenied, "certificate belongs to another device");
    }
    if (c->status == "revoked") return MakeError(Errc::kRevoked, "certificate is revoked");
    return *id;
  }

 private:
  void NotifyCertificatesChanged() {
    std::function<void()> hook;
    {
      std::lock_guard lock(hook_mu_);
      hook = certificates_changed_;
    }
    if (hook) hook();
  }

  void AuditPki(const Request& req, const std::string& type, const std::string& actor,
                audit::ActorType actor_type, const std::string& target, bool ok,
                const std::string& reason, json details) {
    audit::Event e = MakeEvent(ctx_, req, "pki", type);
    e.actor_type = actor_type;
    e.actor = actor;
    e.target = target;
    e.result = ok ? audit::Result::kSuccess : audit::Result::kFailure;
    e.reason = reason;
    e.details = details.dump();
    (void)Audit(ctx_, e);
  }

  Response HandleCmp(const Request& req) {
    // Fail closed: no certificate is issued while the audit trail cannot record it.
    if (auto ok = AuditAvailable(ctx_); !ok) return ErrorResponse(ok.error());
    if (req.body.size() > kMaxCmpBytes) {
      AuditPki(req, "pki.cmp.malformed", "", audit::ActorType::kAnonymous, "", false,
               "request larger than 64 KiB", json::object());
      return Response::Error(413, "too_large", "CMP request larger than 64 KiB");
    }
    auto result = cmp_->Handle(req.body, req.peer);
    const auto& o = result.outcome;
    std::string actor = !o.device_id.empty() ? o.device_id : o.reference;
    AuditPki(req, "pki.cmp." + (o.kind.empty() ? std::string("unknown") : o.kind), actor,
             o.device_id.empty() ? audit::ActorType::kAnonymous : audit::ActorType::kDevice,
             o.serial.empty() ? o.device_id : o.serial, o.accepted, o.error,
             json{{"reference", o.reference}, {"serial", o.serial}, {"device_id", o.device_id}});
    if (!o.accepted) log::warn("CMP {} from {} refused: {}", o.kind, req.peer, o.error);
    Response r;
    r.status = result.http_status;
    if (result.http_status == 200) {
      r.content_type = pki::kCmpContentType;
      r.body = result.der;
      // A refused request (wrong or reused secret, replay, revoked certificate, ...) is answered
      // with 403 so plain HTTP tooling sees the refusal; the body is still the signed CMP error
      // message with the reason, which torwart-agent reads. A client's own certConf rejection is
      // a normal end of a transaction.
      if (!o.accepted && o.kind != "certConf") {
        r.status = 403;
        r.headers["X-Torwart-Error"] = SanitizeHeader(o.error);
      }
    } else {
      r = Response::Error(result.http_status, "bad_request", o.error.empty() ? "malformed CMP request" : o.error);
    }
    return r;
  }

  Response EstCertResponse(X509* cert) {
    Response r;
    r.content_type = pki::kEstCertsContentType;
    r.headers["Content-Transfer-Encoding"] = "base64";
    auto body = pki::EncodeCertsOnly({cert});
    if (!body) return ErrorResponse(body.error());
    r.body = *body;
    return r;
  }

  Response HandleEstEnroll(const Request& req) {
    // Fail closed: no certificate is issued while the audit trail cannot record it.
    if (auto ok = AuditAvailable(ctx_); !ok) return ErrorResponse(ok.error());
    auto fail = [&](int status, const std::string& code, const std::string& why,
                    const std::string& ref) {
      AuditPki(req, "pki.est.simpleenroll", ref, audit::ActorType::kAnonymous, ref, false, why,
               json{{"reference", ref}});
      Response r = Response::Error(status, code, why);
      if (status == 401) r.headers["WWW-Authenticate"] = "Basic realm=\"torwart EST\"";
      return r;
    };
    if (req.body.size() > kMaxEstBytes) return fail(413, "too_large", "CSR larger than 64 KiB", "");
    std::string auth = req.Header("authorization");
    if (auth.rfind("Basic ", 0) != 0) {
      return fail(401, "unauthenticated", "HTTP basic authentication with reference:secret required", "");
    }
    auto decoded = Base64Decode(auth.substr(6));
    size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) return fail(401, "unauthenticated", "malformed basic credentials", "");
    std::string ref = decoded->substr(0, colon), secret = decoded->substr(colon + 1);
    auto enr = LookupReference(ref);
    if (!enr) return fail(401, "unauthenticated", enr.error().message(), ref);
    if (!ConstantTimeEquals(enr->secret, secret)) {
      return fail(401, "unauthenticated", "wrong enrollment secret", ref);
    }
    auto csr = pki::ParseEstCsr(req.body);
    if (!csr) return fail(400, "bad_request", csr.error().message(), ref);
    EVP_PKEY* pub = X509_REQ_get0_pubkey(csr->get());
    if (auto c = ConsumeReference(ref, ""); !c) return fail(409, "failed_precondition", c.error().message(), ref);
    auto cert = ca_->IssueDeviceCertificate(pub, enr->device_id, ctx_.config->device_lifetime, "");
    if (!cert) return fail(500, "internal", cert.error().message(), ref);
    if (auto r = RecordIssued(enr->device_id, cert->get(), ""); !r) return fail(500, "internal", r.error().message(), ref);
    AuditPki(req, "pki.est.simpleenroll", enr->device_id, audit::ActorType::kDevice,
             pki::SerialHex(cert->get()), true, "",
             json{{"reference", ref}, {"serial", pki::SerialHex(cert->get())}});
    return EstCertResponse(cert->get());
  }

  Response HandleEstReenroll(const Request& req) {
    // Fail closed: no certificate is issued while the audit trail cannot record it.
    if (auto ok = AuditAvailable(ctx_); !ok) return ErrorResponse(ok.error());
    auto fail = [&](int status, const std::string& code, const std::string& why,
                    const std::string& who) {
      AuditPki(req, "pki.est.simplereenroll", who,
               who.empty() ? audit::ActorType::kAnonymous : audit::ActorType::kDevice, who, false,
               why, json::object());
      return Response::Error(status, code, why);
    };
    if (req.body.size() > kMaxEstBytes) return fail(413, "too_large", "CSR larger than 64 KiB", "");
    if (req.client_cert_der.empty()) {
      return fail(401, "unauthenticated", "simplereenroll needs the current device certificate as TLS client certificate", "");
    }
    auto cert = pki::CertFromDer(req.client_cert_der);
    if (!cert) return fail(401, "unauthenticated", "unreadable client certificate", "");
    auto id = ca_->VerifyDeviceCertificate(cert->get());
    if (!id) return fail(401, "unauthenticated", id.error().message(), "");
    if (auto a = AuthorizeRenewal(*id, id->fingerprint); !a) {
      return fail(a.error().Is(Errc::kUnauthenticated) ? 401 : 403, "refused", a.error().message(), id->uuid);
    }
    auto csr = pki::ParseEstCsr(req.body);
    if (!csr) return fail(400, "bad_request", csr.error().message(), id->uuid);
    EVP_PKEY* pub = X509_REQ_get0_pubkey(csr->get());
    auto issued = ca_->IssueDeviceCertificate(pub, id->uuid, ctx_.config->device_lifetime, id->fingerprint);
    if (!issued) return fail(500, "internal", issued.error().message(), id->uuid);
    if (auto r = RecordIssued(id->uuid, issued->get(), id->fingerprint); !r) return fail(500, "internal", r.error().message(), id->uuid);
    AuditPki(req, "pki.est.simplereenroll", id->uuid, audit::ActorType::kDevice,
             pki::SerialHex(issued->get()), true, "",
             json{{"old_serial", id->serial}, {"serial", pki::SerialHex(issued->get())}});
    return EstCertResponse(issued->get());
  }

  Context& ctx_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::unique_ptr<pki::CmpServer> cmp_;
  std::string server_cert_, server_key_, chain_file_;
  std::mutex crl_mu_;
  std::string crl_der_;
  std::mutex hook_mu_;
  std::function<void()> certificates_changed_;
  TimePoint crl_generated_{};
};

}  // namespace

int RevocationReasonCode(const std::string& name) {
  for (auto& r : kReasons) {
    if (name == r.name) return r.code;
  }
  return -1;
}

Expected<std::unique_ptr<PkiService>> MakePkiService(Context& ctx) {
  auto s = std::make_unique<PkiServiceImpl>(ctx);
  if (auto r = s->Init(); !r) return MakeError(r.error());
  return std::unique_ptr<PkiService>(std::move(s));
}

Expected<void> ExportRootKey(const std::string& pki_dir, const std::string& out_path) {
  return pki::CertificateAuthority::ExportRootKey(pki_dir, out_path);
}

Expected<void> ImportIssuing(const std::string& pki_dir, const std::string& cert_pem,
                             const std::string& key_pem) {
  return pki::CertificateAuthority::ImportIssuingCa(pki_dir, cert_pem, key_pem);
}

}  // namespace torwart::server
