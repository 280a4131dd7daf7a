// Device key stores: where the agent's private key is generated and kept. The key never leaves
// the device; in a PKCS#11 token it is non-extractable and OpenSSL signs through the libp11
// engine. A KeyStore is not thread-safe (one per agent, used from one thread or strand); the
// EVP_PKEYs it returns are ordinary OpenSSL keys and follow OpenSSL's rules.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

struct KeyStoreOptions {
  // Directory of the agent's state; "file" keys live in state_dir/device.key.
  std::string state_dir;
  // PKCS#11 module; a "module-path" attribute in the URI overrides it.
  std::string pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  // Token user PIN (from --pin, a prompt or the local API); wins over a "pin-value" in the URI.
  std::string pin;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // "file:/var/lib/torwart-agent/device.key" or the pkcs11 URI without the PIN.
  virtual std::string Describe() const = 0;
  // The existing key; kNotFound if there is none.
  virtual Expected<EvpPkeyPtr> Load() = 0;
  // Creates a new ECDSA P-256 key inside the store and returns it (as Load() would).
  // kAlreadyExists if the store already holds a key: nothing is ever replaced.
  virtual Expected<EvpPkeyPtr> Generate() = 0;
  // False when the private key cannot be read out of the store (hardware token).
  virtual bool Extractable() const = 0;
};

// `spec` is one of:
//   "file"                 state_dir/device.key
//   "file:/path/key.pem"   an absolute path
//   "pkcs11:token=T;object=L[;id=%01%02][;serial=S]?pin-value=1234[&module-path=/x.so]"
//       an RFC 7512 URI; pin-value is also accepted as a path attribute. type, if given, must be
//       "private". Generate() needs object=; Load() needs object= or id=.
Expected<std::unique_ptr<KeyStore>> OpenKeyStore(const std::string& spec,
                                                 const KeyStoreOptions& options);

// The parts of an RFC 7512 PKCS#11 URI that key stores use; values are percent-decoded.
struct Pkcs11Uri {
  std::string token;              // CKA_LABEL of the token
  std::string serial;             // token serial number
  std::string manufacturer;       // token manufacturer
  std::string model;              // token model
  std::string object;             // CKA_LABEL of the key
  std::optional<std::string> id;  // CKA_ID (raw bytes)
  std::optional<std::string> pin;
  std::optional<std::string> module_path;

  // "pkcs11:token=...;object=...;id=...;type=private" with percent-encoding, never the PIN.
  std::string ToString() const;
};
// kInvalidArgument for anything that is not a well-formed pkcs11: URI or names an attribute this
// store does not understand (so a typo cannot silently select another key).
Expected<Pkcs11Uri> ParsePkcs11Uri(const std::string& uri);

// Backends, for callers that know which one they want; OpenKeyStore dispatches to these.
Expected<std::unique_ptr<KeyStore>> OpenFileKeyStore(const std::string& path);
Expected<std::unique_ptr<KeyStore>> OpenPkcs11KeyStore(const Pkcs11Uri& uri,
                                                       const KeyStoreOptions& options);

}  // namespace torwart::pki
