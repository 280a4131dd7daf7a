// CMP client on OpenSSL's OSSL_CMP_exec_* with our own transfer callback; see cmp_client.hpp.
#include "torwart/pki/cmp_client.hpp"

#include <openssl/cmp.h>
#include <openssl/cmp_util.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <limits>

#include "torwart/core/log.hpp"

namespace torwart::pki {
namespace {

struct CmpCtxDeleter {
  void operator()(OSSL_CMP_CTX* c) const noexcept { OSSL_CMP_CTX_free(c); }
};
using CmpCtxPtr = std::unique_ptr<OSSL_CMP_CTX, CmpCtxDeleter>;

struct TransferState {
  const CmpTransfer* transfer = nullptr;
  std::string error;
};

int ClientLog(const char* func, const char*, int, OSSL_CMP_severity level, const char* msg) {
  if (level <= OSSL_CMP_LOG_WARNING) log::debug("cmp client: {} {}", func ? func : "", msg);
  return 1;
}

OSSL_CMP_MSG* Transfer(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
  auto* state = static_cast<TransferState*>(OSSL_CMP_CTX_get_transfer_cb_arg(ctx));
  unsigned char* der = nullptr;
  int len = i2d_OSSL_CMP_MSG(req, &der);
  if (len <= 0) {
    state->error = "encoding CMP request failed";
    return nullptr;
  }
  std::string request(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  auto response = (*state->transfer)(request);
  if (!response) {
    state->error = response.error().String();
    return nullptr;
  }
  if (response->size() > static_cast<size_t>(std::numeric_limits<long>::max())) return nullptr;
  const auto* p = reinterpret_cast<const unsigned char*>(response->data());
  OSSL_CMP_MSG* msg = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(response->size()));
  if (msg == nullptr) state->error = "server response is not a CMP message";
  return msg;
}

Expected<CmpCtxPtr> NewContext(TransferState& state, const std::string& trusted_chain_pem) {
  CmpCtxPtr ctx(OSSL_CMP_CTX_new(nullptr, nullptr));
  if (!ctx) return MakeError(Errc::kInternal, "OSSL_CMP_CTX_new");
  auto certs = CertsFromPem(trusted_chain_pem);
  if (!certs) return MakeError(certs.error().WithContext("trusted chain"));
  X509StorePtr store(X509_STORE_new());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  bool ok = store && untrusted != nullptr;
  for (auto& c : *certs) {
    ok = ok && X509_STORE_add_cert(store.get(), c.get()) == 1;
    ok = ok && X509_up_ref(c.get()) == 1 && sk_X509_push(untrusted, c.get()) > 0;
  }
  ok = ok && OSSL_CMP_CTX_set1_untrusted(ctx.get(), untrusted) == 1;
  sk_X509_pop_free(untrusted, X509_free);
  ok = ok && OSSL_CMP_CTX_set0_trustedStore(ctx.get(), store.get()) == 1;
  if (ok) store.release();
  ok = ok && OSSL_CMP_CTX_set_log_cb(ctx.get(), ClientLog) == 1 &&
       OSSL_CMP_CTX_set_transfer_cb(ctx.get(), Transfer) == 1 &&
       OSSL_CMP_CTX_set_transfer_cb_arg(ctx.get(), &state) == 1;
  if (!ok) return MakeError(Errc::kInternal, "setting up CMP client: " + OpenSslErrorString());
  return ctx;
}

Error Failure(OSSL_CMP_CTX* ctx, const TransferState& state, std::string_view what) {
  std::string msg(what);
  char buf[OSSL_CMP_PKISI_BUFLEN];
  if (OSSL_CMP_CTX_get_status(ctx) >= 0 &&
      OSSL_CMP_CTX_snprint_PKIStatus(ctx, buf, sizeof buf) != nullptr) {
    msg += ": server said ";
    msg += buf;
  }
  if (!state.error.empty()) msg += ": " + state.error;
  std::string ossl = OpenSslErrorString();
  if (!ossl.empty()) msg += " (" + ossl + ")";
  Errc code = !state.error.empty() ? Errc::kUnavailable : Errc::kPermissionDenied;
  return Error(code, msg);
}

Expected<Enrolled> Collect(OSSL_CMP_CTX* ctx, X509* cert) {
  Enrolled out;
  out.cert = UpRef(cert);
  STACK_OF(X509)* chain = OSSL_CMP_CTX_get1_extraCertsIn(ctx);
  for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
    X509* c = sk_X509_value(chain, i);
    if (X509_cmp(c, cert) == 0 || X509_check_ca(c) == 0) continue;  // skip leaves (CMP cert)
    out.chain.push_back(UpRef(c));
  }
  sk_X509_pop_free(chain, X509_free);
  return out;
}

Expected<void> AddFingerprint(OSSL_CMP_CTX* ctx, const std::string& fingerprint) {
  if (fingerprint.empty()) return {};
  auto ext = MakeMachineFingerprintExtension(fingerprint);
  if (!ext) return MakeError(ext.error());
  X509_EXTENSIONS* exts = sk_X509_EXTENSION_new_null();
  if (exts == nullptr || sk_X509_EXTENSION_push(exts, ext->get()) <= 0) {
    sk_X509_EXTENSION_free(exts);
    return MakeError(Errc::kInternal, "request extensions");
  }
  ext->release();
  if (OSSL_CMP_CTX_set0_reqExtensions(ctx, exts) != 1) {
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return MakeError(Errc::kInternal, "request extensions");
  }
  return {};
}

// The new key for the certificate template; priv=1 so OpenSSL signs the proof of possession.
bool SetNewKey(OSSL_CMP_CTX* ctx, EVP_PKEY* key) {
  if (EVP_PKEY_up_ref(key) != 1) return false;
  if (OSSL_CMP_CTX_set0_newPkey(ctx, 1, key) != 1) {
    EVP_PKEY_free(key);
    return false;
  }
  return true;
}

}  // namespace

Expected<Enrolled> InitialEnroll(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                                 const std::string& reference, const std::string& secret,
                                 EVP_PKEY* key, const std::string& machine_fingerprint) {
  if (key == nullptr || reference.empty() || secret.empty())
    return MakeError(Errc::kInvalidArgument, "enrollment needs key, reference and secret");
  TransferState state{&transfer, {}};
  auto ctx = NewContext(state, trusted_chain_pem);
  if (!ctx) return MakeError(ctx.error());
  OSSL_CMP_CTX* c = ctx->get();
  X509_NAME* subject = X509_NAME_new();
  bool ok = subject != nullptr &&
            X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(reference.data()),
                                       static_cast<int>(reference.size()), -1, 0) == 1 &&
            OSSL_CMP_CTX_set1_subjectName(c, subject) == 1 &&
            OSSL_CMP_CTX_set1_referenceValue(
                c, reinterpret_cast<const unsigned char*>(reference.data()),
                static_cast<int>(reference.size())) == 1 &&
            OSSL_CMP_CTX_set1_secretValue(c, reinterpret_cast<const unsigned char*>(secret.data()),
                                          static_cast<int>(secret.size())) == 1 &&
            SetNewKey(c, key);
  X509_NAME_free(subject);
  if (!ok) return MakeError(Errc::kInternal, "setting up ir: " + OpenSslErrorString());
  if (auto r = AddFingerprint(c, machine_fingerprint); !r) return MakeError(r.error());
  X509* cert = OSSL_CMP_exec_IR_ses(c);
  if (cert == nullptr) return MakeError(Failure(c, state, "initial enrollment (ir) failed"));
  return Collect(c, cert);
}

Expected<Enrolled> Renew(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                         X509* current, EVP_PKEY* key, const std::string& machine_fingerprint) {
  if (key == nullptr || current == nullptr)
    return MakeError(Errc::kInvalidArgument, "renewal needs the current certificate and key");
  TransferState state{&transfer, {}};
  auto ctx = NewContext(state, trusted_chain_pem);
  if (!ctx) return MakeError(ctx.error());
  OSSL_CMP_CTX* c = ctx->get();
  if (OSSL_CMP_CTX_set1_cert(c, current) != 1 || OSSL_CMP_CTX_set1_pkey(c, key) != 1 ||
      !SetNewKey(c, key)) {
    return MakeError(Errc::kInternal, "setting up kur: " + OpenSslErrorString());
  }
  if (auto r = AddFingerprint(c, machine_fingerprint); !r) return MakeError(r.error());
  X509* cert = OSSL_CMP_exec_KUR_ses(c);
  if (cert == nullptr) return MakeError(Failure(c, state, "renewal (kur) failed"));
  return Collect(c, cert);
}

Expected<void> RevokeOwn(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                         X509* current, EVP_PKEY* key, X509* to_revoke, int reason) {
  if (key == nullptr || current == nullptr)
    return MakeError(Errc::kInvalidArgument, "revocation needs the current certificate and key");
  TransferState state{&transfer, {}};
  auto ctx = NewContext(state, trusted_chain_pem);
  if (!ctx) return MakeError(ctx.error());
  OSSL_CMP_CTX* c = ctx->get();
  if (OSSL_CMP_CTX_set1_cert(c, current) != 1 || OSSL_CMP_CTX_set1_pkey(c, key) != 1 ||
      OSSL_CMP_CTX_set1_oldCert(c, to_revoke != nullptr ? to_revoke : current) != 1 ||
      OSSL_CMP_CTX_set_option(c, OSSL_CMP_OPT_REVOCATION_REASON, reason) != 1) {
    return MakeError(Errc::kInternal, "setting up rr: " + OpenSslErrorString());
  }
  if (OSSL_CMP_exec_RR_ses(c) != 1) return MakeError(Failure(c, state, "revocation (rr) failed"));
  return {};
}

}  // namespace torwart::pki
