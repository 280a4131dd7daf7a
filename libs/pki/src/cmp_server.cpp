// Lightweight CMP server; see cmp_server.hpp and docs/design/pki.md.
//
// OpenSSL keeps one transaction's state (transactionID, nonces, certReqId, implicitConfirm) in
// an OSSL_CMP_SRV_CTX, so every transaction gets its own context. Authentication material is
// established before OpenSSL sees the message: the reference (senderKID) selects the PBMAC
// secret; for signed messages the signer certificate is taken from extraCerts, validated as a
// device certificate and pinned as the context's srvCert so OpenSSL checks the signature with
// exactly that certificate. Refusals before processing are answered by a context in "reject"
// mode whose callbacks all refuse, so the client still gets a signed CMP error.
#include "torwart/pki/cmp_server.hpp"

#include <openssl/cmp.h>
#include <openssl/cmp_util.h>
#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstdlib>

#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/cmp_der.hpp"

namespace torwart::pki {
namespace {

// OpenSSL's CMP log callback has no user argument; the thread's current Handle call collects
// error lines here so the outcome can say why OpenSSL refused.
thread_local std::string* g_cmp_errors = nullptr;

int CmpLog(const char* func, const char*, int, OSSL_CMP_severity level, const char* msg) {
  if (level <= OSSL_CMP_LOG_ERR && g_cmp_errors != nullptr && msg != nullptr) {
    if (!g_cmp_errors->empty()) *g_cmp_errors += "; ";
    if (g_cmp_errors->size() < 2048) *g_cmp_errors += msg;
  }
  log::debug("cmp: {} {}", func ? func : "", msg ? msg : "");
  return 1;
}

OSSL_CMP_PKISI* Reject(int fail_bit, const std::string& text) {
  return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_rejection, 1 << fail_bit, text.c_str());
}

OSSL_CMP_PKISI* Accept() { return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr); }

struct SrvCtxDeleter {
  void operator()(OSSL_CMP_SRV_CTX* c) const noexcept { OSSL_CMP_SRV_CTX_free(c); }
};
struct CmpCtxDeleter {
  void operator()(OSSL_CMP_CTX* c) const noexcept { OSSL_CMP_CTX_free(c); }
};
struct CmpMsgDeleter {
  void operator()(OSSL_CMP_MSG* m) const noexcept { OSSL_CMP_MSG_free(m); }
};
using CmpMsgPtr = std::unique_ptr<OSSL_CMP_MSG, CmpMsgDeleter>;

STACK_OF(X509) * StackOf(std::initializer_list<X509*> certs) {
  STACK_OF(X509)* sk = sk_X509_new_null();
  if (sk == nullptr) return nullptr;
  for (X509* c : certs) {
    if (c == nullptr) continue;
    if (X509_up_ref(c) != 1 || sk_X509_push(sk, c) <= 0) {
      sk_X509_pop_free(sk, X509_free);
      return nullptr;
    }
  }
  return sk;
}

Expected<TimePoint> GeneralizedTime(const std::string& tlv) {
  const auto* p = reinterpret_cast<const unsigned char*>(tlv.data());
  ASN1_GENERALIZEDTIME* t = d2i_ASN1_GENERALIZEDTIME(nullptr, &p, static_cast<long>(tlv.size()));
  if (t == nullptr) {
    ERR_clear_error();
    return MakeError(Errc::kParse, "bad messageTime");
  }
  struct tm tm {};
  bool ok = ASN1_TIME_to_tm(t, &tm) == 1;
  ASN1_GENERALIZEDTIME_free(t);
  if (!ok) return MakeError(Errc::kParse, "bad messageTime");
  return FromUnix(static_cast<int64_t>(timegm(&tm)));
}

int ReasonFromExtensions(const std::optional<std::string>& der) {
  if (!der) return kReasonUnspecified;
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  STACK_OF(X509_EXTENSION)* exts = d2i_X509_EXTENSIONS(nullptr, &p, static_cast<long>(der->size()));
  int reason = kReasonUnspecified;
  if (exts != nullptr) {
    auto* e = static_cast<ASN1_ENUMERATED*>(X509V3_get_d2i(exts, NID_crl_reason, nullptr, nullptr));
    if (e != nullptr) {
      long v = ASN1_ENUMERATED_get(e);
      if (v >= 0 && v <= 10) reason = static_cast<int>(v);
      ASN1_ENUMERATED_free(e);
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  }
  ERR_clear_error();
  return reason;
}

}  // namespace

struct CmpServer::Transaction {
  CmpServer* server = nullptr;
  std::unique_ptr<OSSL_CMP_SRV_CTX, SrvCtxDeleter> srv;
  std::string tid;
  TimePoint created;
  // Authentication established before processing.
  bool mac = false;
  std::string reference;
  EnrollmentSecret secret;
  std::optional<DeviceIdentity> requester;
  X509Ptr requester_cert;
  int rr_reason = kReasonUnspecified;
  // Reject mode: every callback refuses with this text.
  bool reject_all = false;
  std::string reject_text;
  // Results.
  X509Ptr issued;
  std::string device_id, fingerprint;
  bool cert_conf_seen = false;
  CmpOutcome* outcome = nullptr;  // valid during one Handle call

  void Refuse(const std::string& text) {
    if (outcome == nullptr) return;
    outcome->accepted = false;
    if (outcome->error.empty()) outcome->error = text;
  }
};

namespace {

using Tx = CmpServer::Transaction;

Tx* TxOf(OSSL_CMP_SRV_CTX* srv) { return static_cast<Tx*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv)); }

Expected<EvpPkeyPtr> RequestedKey(const OSSL_CRMF_MSG* crm, const X509_REQ* p10cr) {
  if (p10cr != nullptr) {
    EVP_PKEY* k = X509_REQ_get0_pubkey(const_cast<X509_REQ*>(p10cr));
    if (k == nullptr) return MakeError(Errc::kInvalidArgument, "CSR without public key");
    return UpRef(k);
  }
  if (crm == nullptr) return MakeError(Errc::kInvalidArgument, "no certificate request");
  unsigned char* der = nullptr;
  int len = i2d_OSSL_CRMF_CERTTEMPLATE(OSSL_CRMF_MSG_get0_tmpl(crm), &der);
  if (len <= 0) return MakeError(Errc::kInvalidArgument, "bad certificate template");
  std::string tmpl(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  auto spki = CertTemplatePublicKeyDer(tmpl);
  if (!spki) return MakeError(spki.error());
  const auto* p = reinterpret_cast<const unsigned char*>(spki->data());
  EvpPkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki->size())));
  if (!key) {
    ERR_clear_error();
    return MakeError(Errc::kInvalidArgument, "unsupported public key in template");
  }
  return key;
}

Expected<std::string> RequestedFingerprint(const OSSL_CRMF_MSG* crm, const X509_REQ* p10cr) {
  if (p10cr != nullptr) {
    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(const_cast<X509_REQ*>(p10cr));
    auto fp = MachineFingerprintFromExtensions(exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return fp;
  }
  return MachineFingerprintFromExtensions(
      OSSL_CRMF_CERTTEMPLATE_get0_extensions(OSSL_CRMF_MSG_get0_tmpl(crm)));
}

OSSL_CMP_PKISI* OnCertRequest(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req, int /*cert_req_id*/,
                              const OSSL_CRMF_MSG* crm, const X509_REQ* p10cr, X509** cert_out,
                              STACK_OF(X509) * *chain_out, STACK_OF(X509) * *ca_pubs) {
  Tx* t = TxOf(srv);
  if (t->reject_all) {
    t->Refuse(t->reject_text);
    return Reject(OSSL_CMP_PKIFAILUREINFO_badRequest, t->reject_text);
  }
  CmpServer* server = t->server;
  auto refuse = [&](int bit, const std::string& text) {
    t->Refuse(text);
    return Reject(bit, text);
  };
  const int body = OSSL_CMP_MSG_get_bodytype(req);
  auto key = RequestedKey(crm, p10cr);
  if (!key) return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate, key.error().message());
  auto fp = RequestedFingerprint(crm, p10cr);
  if (!fp) return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate, fp.error().message());
  std::string fingerprint = *fp;

  std::string device_id;
  if (t->mac) {
    if (body == kCmpKur) return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                                       "kur must be signed by the current certificate");
    device_id = t->secret.device_id;
  } else {
    if (!t->requester) return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized, "not authenticated");
    if (body == kCmpIr)
      return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                    "ir needs the one-time secret (PBMAC); renew with kur");
    if (crm != nullptr) {
      // kur names the certificate it replaces; it must be the signer's.
      const OSSL_CRMF_CERTID* old = OSSL_CRMF_MSG_get0_regCtrl_oldCertID(crm);
      if (old != nullptr &&
          AsnIntegerHex(OSSL_CRMF_CERTID_get0_serialNumber(old)) != t->requester->serial) {
        return refuse(OSSL_CMP_PKIFAILUREINFO_badCertId,
                      "oldCertID does not name the signing certificate");
      }
    }
    if (fingerprint.empty()) fingerprint = t->requester->fingerprint;
    if (auto r = server->backend().AuthorizeRenewal(*t->requester, fingerprint); !r)
      return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized, r.error().message());
    device_id = t->requester->uuid;
  }
  if (t->outcome) t->outcome->device_id = device_id;

  auto cert = server->ca().IssueDeviceCertificate(key->get(), device_id,
                                                  server->backend().DeviceLifetime(), fingerprint);
  if (!cert) return refuse(OSSL_CMP_PKIFAILUREINFO_systemFailure, cert.error().message());
  if (t->mac) {
    if (auto r = server->backend().ConsumeReference(t->reference, fingerprint); !r)
      return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized, r.error().message());
  }
  if (auto r = server->backend().RecordIssued(device_id, cert->get(), fingerprint); !r)
    return refuse(OSSL_CMP_PKIFAILUREINFO_systemFailure, r.error().message());

  STACK_OF(X509)* chain = StackOf({server->ca().issuing()});
  STACK_OF(X509)* pubs = t->mac ? StackOf({server->ca().root()}) : nullptr;
  X509Ptr out = UpRef(cert->get());
  if (chain == nullptr || !out || (t->mac && pubs == nullptr)) {
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(pubs, X509_free);
    return refuse(OSSL_CMP_PKIFAILUREINFO_systemFailure, "out of memory");
  }
  t->issued = std::move(*cert);
  t->device_id = device_id;
  t->fingerprint = fingerprint;
  if (t->outcome) {
    t->outcome->serial = SerialHex(t->issued.get());
    t->outcome->accepted = true;
  }
  *cert_out = out.release();  // OpenSSL frees certOut, chainOut and caPubs
  *chain_out = chain;
  *ca_pubs = pubs;
  return Accept();
}

OSSL_CMP_PKISI* OnRevocation(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const X509_NAME* issuer,
                             const ASN1_INTEGER* serial) {
  Tx* t = TxOf(srv);
  auto refuse = [&](int bit, const std::string& text) {
    t->Refuse(text);
    return Reject(bit, text);
  };
  if (t->reject_all) return refuse(OSSL_CMP_PKIFAILUREINFO_badRequest, t->reject_text);
  if (!t->requester)
    return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized, "rr must be signed by a device");
  if (issuer == nullptr || serial == nullptr ||
      X509_NAME_cmp(issuer, X509_get_subject_name(t->server->ca().issuing())) != 0)
    return refuse(OSSL_CMP_PKIFAILUREINFO_badCertId, "certificate not issued by this CA");
  std::string serial_hex = AsnIntegerHex(serial);
  if (t->outcome) {
    t->outcome->serial = serial_hex;
    t->outcome->device_id = t->requester->uuid;
  }
  if (auto r = t->server->backend().Revoke(*t->requester, serial_hex, t->rr_reason); !r)
    return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized, r.error().message());
  if (t->outcome) t->outcome->accepted = true;
  return Accept();
}

int OnGenm(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const STACK_OF(OSSL_CMP_ITAV) *,
           STACK_OF(OSSL_CMP_ITAV) * *out) {
  Tx* t = TxOf(srv);
  if (t->reject_all) {
    t->Refuse(t->reject_text);
    ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", t->reject_text.c_str());
    return 0;
  }
  // No InfoTypeAndValue is supported (OpenSSL 3.0 has no caCerts ITAV); answer an empty genp.
  // The CA chain is at /.well-known/est/cacerts.
  *out = sk_OSSL_CMP_ITAV_new_null();
  if (t->outcome) t->outcome->accepted = *out != nullptr;
  return *out != nullptr;
}

void OnError(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const OSSL_CMP_PKISI* si,
             const ASN1_INTEGER*, const OSSL_CMP_PKIFREETEXT*) {
  Tx* t = TxOf(srv);
  char buf[512] = {0};
  const char* text = si ? OSSL_CMP_snprint_PKIStatusInfo(si, buf, sizeof buf) : nullptr;
  if (t->outcome) t->outcome->error = std::string("client error: ") + (text ? text : "");
}

int OnCertConf(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, int, const ASN1_OCTET_STRING* cert_hash,
               const OSSL_CMP_PKISI* si) {
  Tx* t = TxOf(srv);
  t->cert_conf_seen = true;
  if (t->reject_all || !t->issued) {
    std::string text = t->reject_all ? t->reject_text : "no certificate to confirm";
    t->Refuse(text);
    ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", text.c_str());
    return 0;
  }
  bool rejected = false;
  if (si != nullptr) {
    unsigned char* der = nullptr;
    int len = i2d_OSSL_CMP_PKISI(si, &der);
    Expected<int> status = MakeError(Errc::kParse, "bad PKIStatusInfo");
    if (len > 0) status = PkiStatusFromDer(std::string_view(reinterpret_cast<char*>(der),
                                                            static_cast<size_t>(len)));
    OPENSSL_free(der);
    rejected = !status || *status != OSSL_CMP_PKISTATUS_accepted;
  }
  if (!rejected) {
    ASN1_OCTET_STRING* digest = X509_digest_sig(t->issued.get(), nullptr, nullptr);
    bool match = digest != nullptr && cert_hash != nullptr &&
                 ASN1_OCTET_STRING_cmp(digest, cert_hash) == 0;
    ASN1_OCTET_STRING_free(digest);
    if (!match) {
      t->Refuse("certHash does not match the issued certificate");
      ERR_raise(ERR_LIB_CMP, CMP_R_CERTHASH_UNMATCHED);
      return 0;
    }
    if (t->outcome) t->outcome->accepted = true;
    return 1;
  }
  // The client refused the certificate: it must not stay valid.
  DeviceIdentity owner{t->device_id, SerialHex(t->issued.get()), NotAfter(t->issued.get()),
                       t->fingerprint};
  auto r = t->server->backend().Revoke(owner, owner.serial, kReasonCessationOfOperation);
  if (t->outcome) {
    t->outcome->accepted = false;
    t->outcome->error = "client rejected the certificate; revoked";
    if (!r) t->outcome->error += " failed: " + r.error().message();
  }
  return 1;
}

int OnPollReq(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, int, OSSL_CMP_MSG**, int64_t*) {
  Tx* t = TxOf(srv);
  t->Refuse("polling is not supported");
  ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "polling is not supported");
  return 0;
}

}  // namespace

CmpServer::CmpServer(CertificateAuthority& ca, CmpBackend& backend, Clock& clock,
                     CmpServerSettings settings)
    : ca_(ca), backend_(backend), clock_(clock), settings_(settings) {}

CmpServer::~CmpServer() = default;

bool CmpServer::RememberNonce(const std::string& nonce) {
  std::lock_guard lock(mutex_);
  if (!nonces_.insert(nonce).second) return false;
  nonce_order_.push_back(nonce);
  while (nonce_order_.size() > settings_.nonce_cache) {
    nonces_.erase(nonce_order_.front());
    nonce_order_.pop_front();
  }
  return true;
}

std::unique_ptr<CmpServer::Transaction> CmpServer::TakePending(const std::string& tid) {
  std::lock_guard lock(mutex_);
  auto it = pending_.find(tid);
  if (it == pending_.end()) return nullptr;
  std::unique_ptr<Transaction> t = std::move(it->second);
  pending_.erase(it);
  if (clock_.Now() - t->created > settings_.pending_ttl) return nullptr;
  return t;
}

bool CmpServer::IsPending(const std::string& tid) {
  std::lock_guard lock(mutex_);
  return pending_.count(tid) != 0;
}

void CmpServer::StorePending(std::unique_ptr<Transaction> t) {
  std::lock_guard lock(mutex_);
  const TimePoint now = clock_.Now();
  std::erase_if(pending_, [&](const auto& kv) {
    return now - kv.second->created > settings_.pending_ttl;
  });
  while (pending_.size() >= settings_.max_pending && !pending_.empty()) {
    auto oldest = pending_.begin();
    for (auto it = pending_.begin(); it != pending_.end(); ++it)
      if (it->second->created < oldest->second->created) oldest = it;
    pending_.erase(oldest);
  }
  std::string tid = t->tid;
  pending_[tid] = std::move(t);
}

namespace {

Expected<void> PreValidate(const OSSL_CMP_MSG* msg, const std::string* secret, X509* signer) {
  std::unique_ptr<OSSL_CMP_CTX, CmpCtxDeleter> ctx(OSSL_CMP_CTX_new(nullptr, nullptr));
  if (!ctx) return MakeError(Errc::kInternal, "OSSL_CMP_CTX_new");
  OSSL_CMP_CTX_set_log_cb(ctx.get(), CmpLog);
  bool ok = secret != nullptr
                ? OSSL_CMP_CTX_set1_secretValue(
                      ctx.get(), reinterpret_cast<const unsigned char*>(secret->data()),
                      static_cast<int>(secret->size())) == 1
                : OSSL_CMP_CTX_set1_srvCert(ctx.get(), signer) == 1;
  if (!ok) return MakeError(Errc::kInternal, "preparing protection check");
  int valid = OSSL_CMP_validate_msg(ctx.get(), msg);
  ERR_clear_error();
  if (valid != 1)
    return MakeError(Errc::kUnauthenticated,
                     secret ? "message protection invalid (wrong secret?)"
                            : "message signature invalid");
  return {};
}

struct SignerInfo {
  X509Ptr signer;
  std::vector<X509Ptr> others;
};

Expected<SignerInfo> FindSigner(const CmpMessageFields& f) {
  SignerInfo info;
  for (const auto& der : f.extra_certs_der) {
    auto cert = CertFromDer(der);
    if (!cert) return MakeError(cert.error());
    const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert->get());
    bool kid_match =
        f.sender_kid && ski != nullptr &&
        std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)),
                         static_cast<size_t>(ASN1_STRING_length(ski))) == *f.sender_kid;
    if (!info.signer && (kid_match || !f.sender_kid)) {
      info.signer = std::move(*cert);
    } else {
      info.others.push_back(std::move(*cert));
    }
  }
  if (!info.signer)
    return MakeError(Errc::kUnauthenticated, "no signer certificate in extraCerts");
  return info;
}

}  // namespace

CmpServer::Result CmpServer::Handle(std::string_view der, const std::string& peer) {
  Result result;
  CmpOutcome& out = result.outcome;
  out.kind = "malformed";
  result.http_status = 400;
  if (der.empty() || der.size() > settings_.max_request_bytes) {
    out.error = der.empty() ? "empty request" : "request larger than the limit";
    return result;
  }
  auto fields = ParseCmpMessageFields(der);
  if (!fields) {
    out.error = fields.error().message();
    return result;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  CmpMsgPtr req(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
  if (!req || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    ERR_clear_error();
    out.error = "not a CMP PKIMessage";
    return result;
  }
  const int body = fields->body_type;
  switch (body) {
    case kCmpIr: case kCmpCr: case kCmpP10cr: case kCmpKur: case kCmpRr: case kCmpCertConf:
    case kCmpGenm: case kCmpPollReq: case kCmpError:
      out.kind = CmpBodyName(body);
      break;
    default:
      out.kind = "malformed";
  }

  std::string errors;
  g_cmp_errors = &errors;
  struct ResetCapture {
    ~ResetCapture() { g_cmp_errors = nullptr; }
  } reset_capture;

  const TimePoint now = clock_.Now();
  const bool continuing = body == kCmpCertConf || body == kCmpPollReq;
  std::unique_ptr<Transaction> tx;
  std::string refuse;
  const std::string tid = fields->transaction_id.value_or("");

  if (out.kind == "malformed") {
    refuse = "unsupported message type " + CmpBodyName(body);
  } else if (tid.empty()) {
    refuse = "missing transactionID";
  } else if (!fields->sender_nonce || fields->sender_nonce->size() < 8) {
    refuse = "missing or short senderNonce";
  } else if (!fields->has_protection || !fields->protection_alg_oid) {
    refuse = "unprotected messages are not accepted";
  } else if (fields->message_time) {
    auto t = GeneralizedTime(*fields->message_time);
    if (!t) {
      refuse = t.error().message();
    } else if (*t > now + settings_.max_clock_skew || *t < now - settings_.max_clock_skew) {
      refuse = "messageTime " + FormatRfc3339(*t) + " is too far from server time " +
               FormatRfc3339(now);
    }
  }

  if (refuse.empty() && continuing) {
    tx = TakePending(tid);
    if (!tx) {
      refuse = "unknown or expired transaction";
    } else {
      out.reference = tx->reference;
      out.device_id = tx->device_id;
      if (tx->issued) out.serial = SerialHex(tx->issued.get());
      auto v = PreValidate(req.get(), tx->mac ? &tx->secret.secret : nullptr,
                           tx->requester_cert.get());
      if (!v) {
        refuse = v.error().message();
        StorePending(std::move(tx));  // the real client may still confirm
      }
    }
  } else if (refuse.empty()) {
    if (IsPending(tid)) refuse = "transactionID in use";
    tx = std::make_unique<Transaction>();
    tx->server = this;
    tx->tid = tid;
    tx->created = now;
    tx->rr_reason = ReasonFromExtensions(fields->rr_crl_entry_details);
    const bool pbm = *fields->protection_alg_oid == kPbmOidContent;
    if (refuse.empty() && pbm) {
      if (!fields->sender_kid || fields->sender_kid->empty() ||
          fields->sender_kid->size() > 256) {
        refuse = "PBMAC-protected request without reference (senderKID)";
      } else {
        tx->mac = true;
        tx->reference = *fields->sender_kid;
        out.reference = tx->reference;
        auto secret = backend_.LookupReference(tx->reference);
        if (!secret) {
          refuse = "reference refused: " + secret.error().message();
        } else {
          tx->secret = std::move(*secret);
          out.device_id = tx->secret.device_id;
          if (auto v = PreValidate(req.get(), &tx->secret.secret, nullptr); !v)
            refuse = v.error().message();
        }
      }
    } else if (refuse.empty()) {
      auto signer = FindSigner(*fields);
      if (!signer) {
        refuse = signer.error().message();
      } else {
        std::vector<X509*> extra;
        for (auto& c : signer->others) extra.push_back(c.get());
        auto id = ca_.VerifyDeviceCertificate(signer->signer.get(), extra);
        if (!id) {
          refuse = id.error().message();
        } else if (auto v = PreValidate(req.get(), nullptr, signer->signer.get()); !v) {
          refuse = v.error().message();
        } else {
          out.device_id = id->uuid;
          tx->requester = std::move(*id);
          tx->requester_cert = std::move(signer->signer);
        }
      }
    }
  }
  if (refuse.empty() && !RememberNonce(*fields->sender_nonce))
    refuse = "replayed message (senderNonce seen before)";
  if (refuse.empty() && continuing) tx->outcome = &out;

  if (!refuse.empty() && continuing && tx) StorePending(std::move(tx));
  if (!refuse.empty()) {
    // A fresh context that refuses everything, so the client still gets a signed answer.
    tx = std::make_unique<Transaction>();
    tx->server = this;
    tx->tid = tid;
    tx->created = now;
    tx->reject_all = true;
    tx->reject_text = refuse;
    out.error = refuse;
  }
  tx->outcome = &out;

  // Set up the OpenSSL server context for a new transaction.
  if (!tx->srv) {
    tx->srv.reset(OSSL_CMP_SRV_CTX_new(nullptr, nullptr));
    OSSL_CMP_CTX* ctx = tx->srv ? OSSL_CMP_SRV_CTX_get0_cmp_ctx(tx->srv.get()) : nullptr;
    STACK_OF(X509)* chain = StackOf({ca_.issuing()});
    X509StorePtr store(X509_STORE_new());
    bool ok = ctx != nullptr && chain != nullptr && store &&
              X509_STORE_add_cert(store.get(), ca_.root()) == 1 &&
              OSSL_CMP_SRV_CTX_init(tx->srv.get(), tx.get(), OnCertRequest, OnRevocation, OnGenm,
                                    OnError, OnCertConf, OnPollReq) == 1 &&
              OSSL_CMP_CTX_set_log_cb(ctx, CmpLog) == 1 &&
              OSSL_CMP_CTX_set1_cert(ctx, ca_.cmp_cert()) == 1 &&
              OSSL_CMP_CTX_set1_pkey(ctx, ca_.cmp_key()) == 1 &&
              OSSL_CMP_CTX_set1_untrusted(ctx, chain) == 1 &&
              OSSL_CMP_CTX_build_cert_chain(ctx, store.get(), chain) == 1 &&
              OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(tx->srv.get(), 1) == 1;
    sk_X509_pop_free(chain, X509_free);
    if (ok && tx->reject_all) {
      ok = OSSL_CMP_SRV_CTX_set_accept_unprotected(tx->srv.get(), 1) == 1;
    } else if (ok && tx->mac) {
      ok = OSSL_CMP_CTX_set1_secretValue(
               ctx, reinterpret_cast<const unsigned char*>(tx->secret.secret.data()),
               static_cast<int>(tx->secret.secret.size())) == 1;
    } else if (ok) {
      ok = OSSL_CMP_CTX_set1_srvCert(ctx, tx->requester_cert.get()) == 1;
    }
    if (!ok) {
      result.http_status = 500;
      out.accepted = false;
      out.error = "setting up CMP context: " + OpenSslErrorString();
      return result;
    }
  }

  ERR_clear_error();
  if (tx->reject_all) {
    // OpenSSL's error response reports the oldest queued error; make that ours.
    ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", tx->reject_text.c_str());
  }
  CmpMsgPtr rsp(OSSL_CMP_SRV_process_request(tx->srv.get(), req.get()));
  ERR_clear_error();
  if (!rsp) {
    result.http_status = 500;
    out.accepted = false;
    if (out.error.empty()) out.error = "cannot build CMP response: " + errors;
    log::warn("cmp {} from {}: {}", out.kind, peer, out.error);
    return result;
  }
  unsigned char* rsp_der = nullptr;
  int rsp_len = i2d_OSSL_CMP_MSG(rsp.get(), &rsp_der);
  if (rsp_len <= 0) {
    result.http_status = 500;
    out.accepted = false;
    out.error = "encoding CMP response failed";
    return result;
  }
  result.der.assign(reinterpret_cast<char*>(rsp_der), static_cast<size_t>(rsp_len));
  OPENSSL_free(rsp_der);
  result.http_status = 200;

  const int rsp_type = OSSL_CMP_MSG_get_bodytype(rsp.get());
  if (rsp_type == kCmpError) {
    out.accepted = false;
    if (out.error.empty()) out.error = errors.empty() ? "request refused" : errors;
  }
  if (body == kCmpError && rsp_type != kCmpError) {
    out.accepted = true;  // we acknowledged the client's error message
  }
  if (body == kCmpCertConf && !tx->reject_all && !tx->cert_conf_seen && tx->issued &&
      rsp_type == kCmpPkiConf) {
    // An empty certConf: OpenSSL 3.0 treats it as rejection without calling back.
    DeviceIdentity owner{tx->device_id, SerialHex(tx->issued.get()), NotAfter(tx->issued.get()),
                         tx->fingerprint};
    auto r = backend_.Revoke(owner, owner.serial, kReasonCessationOfOperation);
    out.accepted = false;
    out.error = "client rejected the certificate; revoked";
    if (!r) out.error += " failed: " + r.error().message();
  }
  const bool cert_response = rsp_type == kCmpIp || rsp_type == kCmpCp || rsp_type == kCmpKup;
  OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(tx->srv.get());
  if (!tx->reject_all && !continuing && cert_response && tx->issued &&
      OSSL_CMP_CTX_get_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM) != 1) {
    tx->outcome = nullptr;
    StorePending(std::move(tx));
  }
  if (out.accepted) {
    log::info("cmp {} from {}: accepted device={} serial={}", out.kind, peer, out.device_id,
              out.serial);
  } else {
    log::info("cmp {} from {}: refused: {}", out.kind, peer, out.error);
  }
  return result;
}

}  // namespace torwart::pki
