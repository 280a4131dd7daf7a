// The PKCS#11 key store. Keys are generated on the token with C_GenerateKeyPair (the module is
// dlopen'ed directly: bookworm's libp11 0.4.12 can only generate RSA keys) as sensitive,
// non-extractable ECDSA P-256 token objects. Signing goes through OpenSSL's "pkcs11" ENGINE
// (libengine-pkcs11-openssl); bookworm has no PKCS#11 provider. Before the engine is asked for a
// key, the token, PIN and key are checked here so the caller gets a precise error instead of
// libp11's generic one.
//
// The ENGINE API is deprecated in OpenSSL 3.0; this is the one file allowed to use it.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ui.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/ids.hpp"
#include "torwart/pki/key_store.hpp"

namespace torwart::pki {
namespace {

// DER of the namedCurve OID prime256v1 (1.2.840.10045.3.1.7).
constexpr unsigned char kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07};

std::string CkrText(CK_RV rv) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "CKR 0x%lx", static_cast<unsigned long>(rv));
  return buf;
}

// A PKCS#11 module, loaded and C_Initialize'd once per process and never finalized: libp11 (the
// engine) shares the module's global state in this process, and C_Finalize from either side would
// close the other's sessions.
struct Module {
  std::string path;
  CK_FUNCTION_LIST* f = nullptr;
};

Expected<const Module*> GetModule(const std::string& path) {
  static std::mutex mu;
  static auto* modules = new std::map<std::string, std::unique_ptr<Module>>();  // never freed
  std::lock_guard lock(mu);
  auto it = modules->find(path);
  if (it != modules->end()) return it->second.get();

  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return MakeError(Errc::kNotFound, "PKCS#11 module " + path +
                                          " not found (install softhsm2 or set the module path)");
  }
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return MakeError(Errc::kUnavailable, "cannot load PKCS#11 module " + path + ": " +
                                             (why != nullptr ? why : "unknown dlopen error"));
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(handle, "C_GetFunctionList"));
  if (get_list == nullptr) {
    ::dlclose(handle);
    return MakeError(Errc::kInvalidArgument,
                     path + " is not a PKCS#11 module (no C_GetFunctionList)");
  }
  auto module = std::make_unique<Module>();
  module->path = path;
  CK_RV rv = get_list(&module->f);
  if (rv != CKR_OK || module->f == nullptr) {
    ::dlclose(handle);
    return MakeError(Errc::kUnavailable,
                     "C_GetFunctionList of " + path + " failed: " + CkrText(rv));
  }
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  rv = module->f->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    ::dlclose(handle);
    return MakeError(Errc::kUnavailable,
                     "C_Initialize of PKCS#11 module " + path + " failed: " + CkrText(rv));
  }
  const Module* result = module.get();
  modules->emplace(path, std::move(module));
  return result;
}

// Fixed-width, blank-padded CK_UTF8CHAR field without the padding.
std::string Padded(const unsigned char* p, size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

class Session {
 public:
  Session(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE h) : f_(f), h_(h) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { f_->C_CloseSession(h_); }
  CK_SESSION_HANDLE get() const { return h_; }

 private:
  CK_FUNCTION_LIST* f_;
  CK_SESSION_HANDLE h_;
};

struct Slot {
  CK_SLOT_ID id = 0;
  std::string label;
  CK_FLAGS flags = 0;
};

Expected<Slot> FindSlot(const Module& m, const Pkcs11Uri& uri) {
  CK_ULONG count = 0;
  CK_RV rv = m.f->C_GetSlotList(CK_TRUE, nullptr, &count);
  std::vector<CK_SLOT_ID> slots(count);
  if (rv == CKR_OK && count > 0) rv = m.f->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) {
    return MakeError(Errc::kUnavailable, "C_GetSlotList of " + m.path + " failed: " + CkrText(rv));
  }
  slots.resize(count);
  std::vector<Slot> matches;
  std::string present;
  for (CK_SLOT_ID id : slots) {
    CK_TOKEN_INFO info{};
    if (m.f->C_GetTokenInfo(id, &info) != CKR_OK) continue;
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    Slot s{id, Padded(info.label, sizeof(info.label)), info.flags};
    present += (present.empty() ? "'" : ", '") + s.label + "'";
    if (!uri.token.empty() && s.label != uri.token) continue;
    if (!uri.serial.empty() && Padded(info.serialNumber, sizeof(info.serialNumber)) != uri.serial) {
      continue;
    }
    if (!uri.manufacturer.empty() &&
        Padded(info.manufacturerID, sizeof(info.manufacturerID)) != uri.manufacturer) {
      continue;
    }
    if (!uri.model.empty() && Padded(info.model, sizeof(info.model)) != uri.model) continue;
    matches.push_back(std::move(s));
  }
  if (matches.empty()) {
    return MakeError(Errc::kNotFound,
                     "PKCS#11 token '" + (uri.token.empty() ? "serial " + uri.serial : uri.token) +
                         "' not found in " + m.path +
                         " (initialized tokens: " + (present.empty() ? "none" : present) + ")");
  }
  if (matches.size() > 1) {
    return MakeError(Errc::kInvalidArgument,
                     "several PKCS#11 tokens match " + uri.ToString() + "; add serial= to the URI");
  }
  return matches.front();
}

Expected<std::unique_ptr<Session>> OpenSession(const Module& m, const Slot& slot, bool rw) {
  CK_SESSION_HANDLE h = 0;
  CK_FLAGS flags = CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0);
  CK_RV rv = m.f->C_OpenSession(slot.id, flags, nullptr, nullptr, &h);
  if (rv != CKR_OK) {
    return MakeError(Errc::kUnavailable,
                     "cannot open a session on token '" + slot.label + "': " + CkrText(rv));
  }
  return std::make_unique<Session>(m.f, h);
}

// SHA-256 of the PIN that logged this process in, per module and slot. PKCS#11 login state is
// per process: once libp11 or we are logged in, C_Login answers CKR_USER_ALREADY_LOGGED_IN without
// checking the PIN, so a second store with a wrong PIN is caught by comparing with this record.
std::string PinDigest(const std::string& pin) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(pin.data(), pin.size(), digest, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), len);
}

class VerifiedPins {
 public:
  static VerifiedPins& Instance() {
    static auto* pins = new VerifiedPins();  // never freed: used until exit
    return *pins;
  }
  void Remember(const std::string& key, std::string digest) {
    std::lock_guard lock(mu_);
    pins_[key] = std::move(digest);
  }
  // True if no PIN is recorded or `digest` matches it.
  bool Matches(const std::string& key, const std::string& digest) {
    std::lock_guard lock(mu_);
    auto it = pins_.find(key);
    return it == pins_.end() || ConstantTimeEquals(it->second, digest);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> pins_;
};

Expected<void> Login(const Module& m, const Slot& slot, const Session& s, const std::string& pin) {
  if (slot.flags & CKF_USER_PIN_LOCKED) {
    return MakeError(Errc::kPermissionDenied,
                     "the user PIN of token '" + slot.label + "' is locked (too many wrong PINs)");
  }
  if (pin.empty()) {
    return MakeError(Errc::kUnauthenticated, "token '" + slot.label + "' needs a PIN");
  }
  const std::string slot_key = m.path + "#" + std::to_string(slot.id);
  const std::string digest = PinDigest(pin);
  std::string pin_copy = pin;  // C_Login takes a non-const pointer
  CK_RV rv = m.f->C_Login(s.get(), CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin_copy.data()),
                          pin_copy.size());
  OPENSSL_cleanse(pin_copy.data(), pin_copy.size());
  switch (rv) {
    case CKR_OK:
      VerifiedPins::Instance().Remember(slot_key, digest);
      return {};
    case CKR_USER_ALREADY_LOGGED_IN:
      if (!VerifiedPins::Instance().Matches(slot_key, digest)) {
        return MakeError(Errc::kUnauthenticated,
                         "wrong PIN for PKCS#11 token '" + slot.label + "'");
      }
      return {};
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
      return MakeError(Errc::kUnauthenticated, "wrong PIN for PKCS#11 token '" + slot.label + "'");
    case CKR_PIN_LOCKED:
      return MakeError(Errc::kPermissionDenied, "the user PIN of token '" + slot.label +
                                                    "' is locked (too many wrong PINs)");
    case CKR_PIN_EXPIRED:
      return MakeError(Errc::kPermissionDenied,
                       "the user PIN of token '" + slot.label + "' has expired");
    case CKR_USER_PIN_NOT_INITIALIZED:
      return MakeError(
          Errc::kFailedPrecondition,
          "token '" + slot.label + "' has no user PIN yet (softhsm2-util --init-token)");
    default:
      return MakeError(Errc::kUnavailable,
                       "C_Login on token '" + slot.label + "' failed: " + CkrText(rv));
  }
}

Expected<std::vector<CK_OBJECT_HANDLE>> FindObjects(const Module& m, const Session& s,
                                                    CK_OBJECT_CLASS cls, const Pkcs11Uri& uri) {
  std::vector<CK_ATTRIBUTE> tmpl;
  tmpl.push_back({CKA_CLASS, &cls, sizeof(cls)});
  std::string label = uri.object;
  std::string id = uri.id.value_or("");
  if (!label.empty()) tmpl.push_back({CKA_LABEL, label.data(), label.size()});
  if (uri.id) tmpl.push_back({CKA_ID, id.data(), id.size()});
  CK_RV rv = m.f->C_FindObjectsInit(s.get(), tmpl.data(), tmpl.size());
  if (rv != CKR_OK) {
    return MakeError(Errc::kUnavailable, "C_FindObjectsInit failed: " + CkrText(rv));
  }
  std::vector<CK_OBJECT_HANDLE> found;
  for (;;) {
    CK_OBJECT_HANDLE batch[16];
    CK_ULONG n = 0;
    rv = m.f->C_FindObjects(s.get(), batch, 16, &n);
    if (rv != CKR_OK || n == 0) break;
    found.insert(found.end(), batch, batch + n);
  }
  m.f->C_FindObjectsFinal(s.get());
  if (rv != CKR_OK) return MakeError(Errc::kUnavailable, "C_FindObjects failed: " + CkrText(rv));
  return found;
}

Expected<bool> GetBool(const Module& m, const Session& s, CK_OBJECT_HANDLE o,
                       CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attr{type, &value, sizeof(value)};
  CK_RV rv = m.f->C_GetAttributeValue(s.get(), o, &attr, 1);
  if (rv != CKR_OK) return MakeError(Errc::kUnavailable, "C_GetAttributeValue: " + CkrText(rv));
  return value == CK_TRUE;
}

// The process-wide pkcs11 ENGINE. OpenSSL keeps one "pkcs11" engine per process and libp11
// binds it to one module, so all PKCS#11 key stores of a process must use the same module.
// The functional reference is never released: keys handed out stay usable until exit.
Expected<ENGINE*> GetEngine(const std::string& module_path) {
  static std::mutex mu;
  static ENGINE* engine = nullptr;
  static std::string bound_module;
  std::lock_guard lock(mu);
  if (engine != nullptr) {
    if (bound_module != module_path) {
      return MakeError(Errc::kFailedPrecondition,
                       "the pkcs11 engine is already bound to module " + bound_module +
                           "; one process can use only one PKCS#11 module");
    }
    return engine;
  }
  ENGINE* e = ENGINE_by_id("pkcs11");
  if (e == nullptr) {
    ERR_clear_error();
    return MakeError(Errc::kNotFound,
                     "OpenSSL engine 'pkcs11' not available (install libengine-pkcs11-openssl)");
  }
  if (ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module_path.c_str(), 0) != 1 ||
      ENGINE_init(e) != 1) {
    std::string why = OpenSslErrorString();
    ENGINE_free(e);
    return MakeError(Errc::kUnavailable,
                     "cannot initialize the pkcs11 engine with " + module_path + ": " + why);
  }
  ENGINE_free(e);  // drop the structural reference; the functional one from ENGINE_init stays
  engine = e;
  bound_module = module_path;
  return engine;
}

// A UI that never prompts: the PIN is always passed explicitly, and a daemon has no terminal.
UI_METHOD* NoPromptUi() {
  static UI_METHOD* ui = [] {
    UI_METHOD* m = UI_create_method("torwart no-prompt");
    UI_method_set_reader(m, [](UI*, UI_STRING*) { return -1; });
    return m;
  }();
  return ui;
}

class Pkcs11KeyStore final : public KeyStore {
 public:
  Pkcs11KeyStore(Pkcs11Uri uri, std::string module_path, std::string pin)
      : uri_(std::move(uri)), module_path_(std::move(module_path)), pin_(std::move(pin)) {}
  ~Pkcs11KeyStore() override { OPENSSL_cleanse(pin_.data(), pin_.size()); }

  std::string Describe() const override { return uri_.ToString(); }
  bool Extractable() const override { return false; }

  Expected<EvpPkeyPtr> Load() override {
    auto m = GetModule(module_path_);
    if (!m) return MakeError(m.error());
    auto slot = FindSlot(**m, uri_);
    if (!slot) return MakeError(slot.error());
    {
      auto session = OpenSession(**m, *slot, false);
      if (!session) return MakeError(session.error());
      auto login = Login(**m, *slot, **session, pin_);
      if (!login) return MakeError(login.error());
      auto keys = FindObjects(**m, **session, CKO_PRIVATE_KEY, uri_);
      if (!keys) return MakeError(keys.error());
      if (keys->empty()) {
        return MakeError(Errc::kNotFound,
                         "no private key " + KeyName() + " on token '" + slot->label + "'");
      }
      if (keys->size() > 1) {
        return MakeError(Errc::kInvalidArgument,
                         "several private keys match " + Describe() + "; add id= to the URI");
      }
    }
    auto engine = GetEngine(module_path_);
    if (!engine) return MakeError(engine.error());
    if (ENGINE_ctrl_cmd_string(*engine, "PIN", pin_.c_str(), 0) != 1) {
      return MakeError(Errc::kInternal, "pkcs11 engine refused the PIN: " + OpenSslErrorString());
    }
    const std::string uri = Describe();
    EVP_PKEY* key = ENGINE_load_private_key(*engine, uri.c_str(), NoPromptUi(), nullptr);
    if (key == nullptr) {
      return MakeError(Errc::kUnavailable,
                       "the pkcs11 engine could not load " + uri + ": " + OpenSslErrorString());
    }
    EvpPkeyPtr owned(key);
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC || EVP_PKEY_get_bits(key) != 256) {
      return MakeError(Errc::kInvalidArgument, uri + " is not an ECDSA P-256 key");
    }
    return owned;
  }

  Expected<EvpPkeyPtr> Generate() override {
    if (uri_.object.empty()) {
      return MakeError(Errc::kInvalidArgument,
                       "generating a key needs object=<label> in the URI (" + Describe() + ")");
    }
    auto m = GetModule(module_path_);
    if (!m) return MakeError(m.error());
    auto slot = FindSlot(**m, uri_);
    if (!slot) return MakeError(slot.error());
    {
      auto session = OpenSession(**m, *slot, true);
      if (!session) return MakeError(session.error());
      auto login = Login(**m, *slot, **session, pin_);
      if (!login) return MakeError(login.error());
      // A key with the same label (or id) would make the URI ambiguous: never add a second one.
      Pkcs11Uri by_label = uri_;
      by_label.id.reset();
      auto existing = FindObjects(**m, **session, CKO_PRIVATE_KEY, by_label);
      if (!existing) return MakeError(existing.error());
      if (existing->empty() && uri_.id) {
        Pkcs11Uri by_id = uri_;
        by_id.object.clear();
        existing = FindObjects(**m, **session, CKO_PRIVATE_KEY, by_id);
        if (!existing) return MakeError(existing.error());
      }
      if (!existing->empty()) {
        return MakeError(Errc::kAlreadyExists, "token '" + slot->label +
                                                   "' already holds a private key " + KeyName() +
                                                   "; it is not replaced");
      }
      auto made = GenerateOnToken(**m, **session);
      if (!made)
        return MakeError(made.error().WithContext("generating a key on '" + slot->label + "'"));
    }
    return Load();
  }

 private:
  std::string KeyName() const {
    std::string name = uri_.object.empty() ? "" : "'" + uri_.object + "'";
    if (uri_.id) name += (name.empty() ? "id " : " id ") + HexEncode(*uri_.id);
    return name;
  }

  Expected<void> GenerateOnToken(const Module& m, const Session& s) {
    // Without an id in the URI a random one is chosen: libp11 and pkcs11-tool pair keys and
    // certificates by CKA_ID, so it should be unique.
    std::string id = uri_.id.value_or(RandomBytes(16));
    std::string label = uri_.object;
    CK_BBOOL yes = CK_TRUE;
    CK_BBOOL no = CK_FALSE;
    CK_BYTE params[sizeof(kP256Params)];
    std::memcpy(params, kP256Params, sizeof(params));
    CK_ATTRIBUTE pub[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},          {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},         {CKA_EC_PARAMS, params, sizeof(params)},
        {CKA_LABEL, label.data(), label.size()}, {CKA_ID, id.data(), id.size()},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},          {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},      {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},           {CKA_DERIVE, &no, sizeof(no)},
        {CKA_DECRYPT, &no, sizeof(no)},          {CKA_UNWRAP, &no, sizeof(no)},
        {CKA_LABEL, label.data(), label.size()}, {CKA_ID, id.data(), id.size()},
    };
    CK_MECHANISM mech{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
    CK_OBJECT_HANDLE pub_h = 0;
    CK_OBJECT_HANDLE priv_h = 0;
    CK_RV rv = m.f->C_GenerateKeyPair(s.get(), &mech, pub, std::size(pub), priv, std::size(priv),
                                      &pub_h, &priv_h);
    if (rv != CKR_OK) {
      return MakeError(Errc::kUnavailable, "C_GenerateKeyPair (EC P-256) failed: " + CkrText(rv));
    }
    // Trust, but verify: a token that ignored the template must not hold our device key.
    auto sensitive = GetBool(m, s, priv_h, CKA_SENSITIVE);
    auto extractable = GetBool(m, s, priv_h, CKA_EXTRACTABLE);
    if (!sensitive || !extractable || !*sensitive || *extractable) {
      m.f->C_DestroyObject(s.get(), priv_h);
      m.f->C_DestroyObject(s.get(), pub_h);
      return MakeError(Errc::kFailedPrecondition,
                       "the token did not create the key as sensitive and non-extractable");
    }
    return {};
  }

  Pkcs11Uri uri_;
  std::string module_path_;
  std::string pin_;
};

}  // namespace

Expected<std::unique_ptr<KeyStore>> OpenPkcs11KeyStore(const Pkcs11Uri& uri,
                                                       const KeyStoreOptions& options) {
  std::string module = uri.module_path.value_or(options.pkcs11_module);
  if (module.empty()) {
    return MakeError(Errc::kInvalidArgument, "no PKCS#11 module configured");
  }
  std::string pin = !options.pin.empty() ? options.pin : uri.pin.value_or("");
  Pkcs11Uri clean = uri;
  clean.pin.reset();
  return std::unique_ptr<KeyStore>(
      std::make_unique<Pkcs11KeyStore>(std::move(clean), std::move(module), std::move(pin)));
}

}  // namespace torwart::pki
