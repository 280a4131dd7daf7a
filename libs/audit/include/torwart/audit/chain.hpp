// The tamper-evident form of audit records: a canonical encoding, the hash chain over it, and
// checkpoints (seq, chain hash) signed with the server's ECDSA P-256 audit key.
// Pure functions and immutable key objects: all thread-safe. Keys come in as PEM text; reading
// key files is the composition root's job.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "torwart/audit/event.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace torwart::audit {

// Hash of "before the first record": 64 hex zeros.
inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Deterministic bytes of an event: a version tag, then every field (schema, seq, time in UTC
// microseconds, actor_type, actor, organisation, source, category, type, target, result,
// reason, details) as a 4-byte big-endian length and the raw bytes. `hash` is not included.
std::string CanonicalEncoding(const Event& e);
// SHA-256 (hex) of CanonicalEncoding.
std::string ContentHash(const Event& e);
// The chain: SHA-256 (hex) of a domain tag, the previous record's hash and this record's
// content hash (both decoded from hex). Returns "" if either is not 64 hex digits.
std::string ChainHash(std::string_view prev_hash_hex, std::string_view content_hash_hex);

// A record as stored: the event (with seq and hash) and its content hash. A purged record
// (retention) keeps seq, time, category and both hashes; its other fields are blank.
struct Record {
  Event event;
  std::string content_hash;
  bool purged = false;
};

// The chain head a checkpoint signs.
struct Checkpoint {
  int64_t seq = 0;
  std::string hash;       // chain hash of record `seq`
  TimePoint time;         // when it was signed (UTC, microsecond precision)
  std::string key_id;     // SHA-256 hex of the signing key's SubjectPublicKeyInfo (DER)
  std::string signature;  // base64 of the DER ECDSA signature over CheckpointMessage
};

// The exact bytes that are signed.
std::string CheckpointMessage(const Checkpoint& c);

namespace detail {
struct PkeyDeleter {
  void operator()(evp_pkey_st* k) const;
};
}  // namespace detail

// The server's private audit key (ECDSA P-256).
class CheckpointSigner {
 public:
  // A new P-256 private key as unencrypted PKCS#8 PEM.
  static Expected<std::string> GeneratePrivateKeyPem();
  static Expected<CheckpointSigner> FromPrivateKeyPem(std::string_view pem);

  const std::string& key_id() const { return key_id_; }
  // SubjectPublicKeyInfo PEM, for the offline verifier.
  const std::string& public_key_pem() const { return public_pem_; }
  Expected<Checkpoint> Sign(int64_t seq, std::string hash, TimePoint time) const;

 private:
  std::unique_ptr<evp_pkey_st, detail::PkeyDeleter> key_;
  std::string key_id_, public_pem_;
};

class CheckpointVerifier {
 public:
  static Expected<CheckpointVerifier> FromPublicKeyPem(std::string_view pem);
  const std::string& key_id() const { return key_id_; }
  // kInvalidArgument with a reason if the signature or the key id does not match.
  Expected<void> Verify(const Checkpoint& c) const;

 private:
  std::unique_ptr<evp_pkey_st, detail::PkeyDeleter> key_;
  std::string key_id_;
};

}  // namespace torwart::audit
