#include "torwart/audit/chain.hpp"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <chrono>
#include <utility>

#include "torwart/core/ids.hpp"

namespace torwart::audit {
namespace {

constexpr std::string_view kEncodingTag = "torwart-audit-record/2";
constexpr std::string_view kChainTag = "torwart-audit-chain/1";
constexpr std::string_view kCheckpointTag = "torwart-audit-checkpoint/1";

int64_t Micros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

void Field(std::string& out, std::string_view v) {
  const uint32_t n = static_cast<uint32_t>(v.size());
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out.append(v);
}

std::string Sha256(std::string_view data) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string LastOpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

using Pkey = std::unique_ptr<evp_pkey_st, detail::PkeyDeleter>;

// SHA-256 hex of the DER SubjectPublicKeyInfo, and its PEM.
Expected<std::pair<std::string, std::string>> PublicKeyIds(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key, &der);
  if (n <= 0) return MakeError(Errc::kInternal, "encoding audit public key: " + LastOpenSslError());
  std::string id = HexEncode(Sha256(std::string_view(reinterpret_cast<char*>(der), n)));
  OPENSSL_free(der);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return MakeError(Errc::kInternal, "writing audit public key: " + LastOpenSslError());
  }
  char* p = nullptr;
  long len = BIO_get_mem_data(bio.get(), &p);
  return std::make_pair(std::move(id), std::string(p, static_cast<size_t>(len)));
}

Expected<void> CheckP256(EVP_PKEY* key, std::string_view what) {
  char group[64] = {};
  size_t glen = 0;
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &glen) != 1 ||
      std::string_view(group, glen) != "prime256v1") {
    return MakeError(Errc::kInvalidArgument, std::string(what) + " is not an ECDSA P-256 key");
  }
  return {};
}

}  // namespace

namespace detail {
void PkeyDeleter::operator()(evp_pkey_st* k) const { EVP_PKEY_free(k); }
}  // namespace detail

std::string CanonicalEncoding(const Event& e) {
  std::string out;
  out.reserve(128 + e.actor.size() + e.reason.size() + e.details.size() + e.target.size());
  Field(out, kEncodingTag);
  Field(out, std::to_string(e.schema));
  Field(out, std::to_string(e.seq));
  Field(out, std::to_string(Micros(e.time)));
  Field(out, ToString(e.actor_type));
  Field(out, e.actor);
  Field(out, e.organisation);
  Field(out, e.source);
  Field(out, e.category);
  Field(out, e.type);
  Field(out, e.target);
  Field(out, ToString(e.result));
  Field(out, e.reason);
  Field(out, e.details);
  return out;
}

std::string ContentHash(const Event& e) { return HexEncode(Sha256(CanonicalEncoding(e))); }

std::string ChainHash(std::string_view prev_hash_hex, std::string_view content_hash_hex) {
  if (prev_hash_hex.size() != 64 || content_hash_hex.size() != 64) return "";
  auto prev = HexDecode(prev_hash_hex);
  auto content = HexDecode(content_hash_hex);
  if (!prev || !content) return "";
  std::string data(kChainTag);
  data += *prev;
  data += *content;
  return HexEncode(Sha256(data));
}

std::string CheckpointMessage(const Checkpoint& c) {
  std::string m(kCheckpointTag);
  m += "\nseq=" + std::to_string(c.seq);
  m += "\nhash=" + c.hash;
  m += "\ntime_us=" + std::to_string(Micros(c.time));
  m += "\nkey=" + c.key_id + "\n";
  return m;
}

Expected<std::string> CheckpointSigner::GeneratePrivateKeyPem() {
  Pkey key(EVP_EC_gen("P-256"));
  if (!key) return MakeError(Errc::kInternal, "generating audit key: " + LastOpenSslError());
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return MakeError(Errc::kInternal, "writing audit key: " + LastOpenSslError());
  }
  char* p = nullptr;
  long len = BIO_get_mem_data(bio.get(), &p);
  return std::string(p, static_cast<size_t>(len));
}

Expected<CheckpointSigner> CheckpointSigner::FromPrivateKeyPem(std::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  Pkey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return MakeError(Errc::kParse, "reading audit private key: " + LastOpenSslError());
  }
  if (auto ok = CheckP256(key.get(), "the audit key"); !ok) return MakeError(ok.error());
  auto ids = PublicKeyIds(key.get());
  if (!ids) return MakeError(ids.error());
  CheckpointSigner s;
  s.key_ = std::move(key);
  s.key_id_ = std::move(ids->first);
  s.public_pem_ = std::move(ids->second);
  return s;
}

Expected<Checkpoint> CheckpointSigner::Sign(int64_t seq, std::string hash, TimePoint time) const {
  Checkpoint c;
  c.seq = seq;
  c.hash = std::move(hash);
  c.time = TimePoint(std::chrono::duration_cast<Duration>(std::chrono::microseconds(Micros(time))));
  c.key_id = key_id_;
  const std::string msg = CheckpointMessage(c);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len,
                     reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1) {
    return MakeError(Errc::kInternal, "signing audit checkpoint: " + LastOpenSslError());
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1) {
    return MakeError(Errc::kInternal, "signing audit checkpoint: " + LastOpenSslError());
  }
  sig.resize(len);
  c.signature = Base64Encode(sig);
  return c;
}

Expected<CheckpointVerifier> CheckpointVerifier::FromPublicKeyPem(std::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  Pkey key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return MakeError(Errc::kParse, "reading audit public key: " + LastOpenSslError());
  if (auto ok = CheckP256(key.get(), "the audit public key"); !ok) return MakeError(ok.error());
  auto ids = PublicKeyIds(key.get());
  if (!ids) return MakeError(ids.error());
  CheckpointVerifier v;
  v.key_ = std::move(key);
  v.key_id_ = std::move(ids->first);
  return v;
}

Expected<void> CheckpointVerifier::Verify(const Checkpoint& c) const {
  if (c.key_id != key_id_) {
    return MakeError(Errc::kInvalidArgument,
                     "checkpoint at seq " + std::to_string(c.seq) + " was signed by another key (" +
                         c.key_id.substr(0, 16) + "...)");
  }
  auto sig = Base64Decode(c.signature);
  if (!sig) {
    return MakeError(Errc::kInvalidArgument,
                     "checkpoint at seq " + std::to_string(c.seq) + ": signature is not base64");
  }
  const std::string msg = CheckpointMessage(c);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  int ok = md ? EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, key_.get()) : 0;
  if (ok == 1) {
    ok = EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig->data()),
                          sig->size(), reinterpret_cast<const unsigned char*>(msg.data()),
                          msg.size());
  }
  ERR_clear_error();
  if (ok != 1) {
    return MakeError(Errc::kInvalidArgument,
                     "checkpoint at seq " + std::to_string(c.seq) + ": signature does not verify");
  }
  return {};
}

}  // namespace torwart::audit
