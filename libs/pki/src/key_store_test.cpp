// Key stores: the file store on a temp dir, and the PKCS#11 store against a real SoftHSM2 token
// that the test creates in its own temp dir (SOFTHSM2_CONF). Also the PKCS#11 URI codec and the
// machine fingerprint.
#include "torwart/pki/key_store.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "torwart/pki/fingerprint.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {
namespace {

namespace fs = std::filesystem;

constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "torwart-keys-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// A software copy of the public half, so verification never touches the store.
EvpPkeyPtr PublicOnly(EVP_PKEY* key) {
  auto pem = PublicKeyToPem(key);
  EXPECT_TRUE(pem) << pem.error().String();
  auto pub = PublicKeyFromPem(*pem);
  EXPECT_TRUE(pub) << pub.error().String();
  return std::move(*pub);
}

std::string SignSha256(EVP_PKEY* key, const std::string& data) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return {};
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return {};
  }
  sig.resize(len);
  return sig;
}

bool VerifySha256(EVP_PKEY* pub, const std::string& data, const std::string& sig) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok =
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pub) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ERR_clear_error();
  return ok;
}

// Sign with `key`, verify with a software copy of its public key; also checks a tampered message.
void ExpectSignsAndVerifies(EVP_PKEY* key) {
  const std::string data = "challenge from torwartd";
  std::string sig = SignSha256(key, data);
  ASSERT_FALSE(sig.empty()) << OpenSslErrorString();
  EvpPkeyPtr pub = PublicOnly(key);
  EXPECT_TRUE(VerifySha256(pub.get(), data, sig));
  EXPECT_FALSE(VerifySha256(pub.get(), data + "!", sig));
}

// A CSR signed by `key` that verifies against its embedded key after a PEM round trip.
void ExpectCsrVerifies(EVP_PKEY* key) {
  auto csr = MakeCsr(key, "device-under-test");
  ASSERT_TRUE(csr) << csr.error().String();
  auto pem = CsrToPem(csr->get());
  ASSERT_TRUE(pem) << pem.error().String();
  auto parsed = CsrFromPem(*pem);
  ASSERT_TRUE(parsed) << parsed.error().String();
  EVP_PKEY* embedded = X509_REQ_get0_pubkey(parsed->get());
  ASSERT_NE(embedded, nullptr);
  EXPECT_EQ(X509_REQ_verify(parsed->get(), embedded), 1);
  EvpPkeyPtr pub = PublicOnly(key);
  EXPECT_EQ(EVP_PKEY_eq(embedded, pub.get()), 1);
}

// ---------------------------------------------------------------------------------------------
// File store

TEST(FileKeyStoreTest, GenerateCreatesPrivateFileAndLoadReturnsSameKey) {
  TempDir tmp;
  KeyStoreOptions options;
  options.state_dir = (tmp.path() / "var" / "agent").string();
  auto store = OpenKeyStore("file", options);
  ASSERT_TRUE(store) << store.error().String();
  const fs::path key_path = tmp.path() / "var" / "agent" / "device.key";
  EXPECT_EQ((*store)->Describe(), "file:" + key_path.string());
  EXPECT_TRUE((*store)->Extractable());

  auto missing = (*store)->Load();
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().Is(Errc::kNotFound)) << missing.error().String();

  // A permissive umask must not leak into the key file's or the directory's mode.
  mode_t old_umask = ::umask(0);
  auto generated = (*store)->Generate();
  ::umask(old_umask);
  ASSERT_TRUE(generated) << generated.error().String();
  EXPECT_EQ(ModeOf(key_path), 0600u);
  EXPECT_EQ(ModeOf(key_path.parent_path()), 0700u);
  EXPECT_EQ(ModeOf(key_path.parent_path().parent_path()), 0700u);
  // Atomic write: only the final file remains, no temp file.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(key_path.parent_path())) {
    EXPECT_EQ(e.path().filename(), "device.key");
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  EXPECT_TRUE(ReadAll(key_path).starts_with("-----BEGIN PRIVATE KEY-----"));

  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded) << loaded.error().String();
  EXPECT_EQ(EVP_PKEY_eq(generated->get(), loaded->get()), 1);
  EXPECT_EQ(EVP_PKEY_get_bits(loaded->get()), 256);
  ExpectSignsAndVerifies(loaded->get());
  ExpectCsrVerifies(loaded->get());
}

TEST(FileKeyStoreTest, GenerateNeverReplacesAnExistingKey) {
  TempDir tmp;
  const fs::path key_path = tmp.path() / "key.pem";
  auto store = OpenKeyStore("file:" + key_path.string(), {});
  ASSERT_TRUE(store) << store.error().String();
  ASSERT_TRUE((*store)->Generate());
  const std::string before = ReadAll(key_path);
  auto again = (*store)->Generate();
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kAlreadyExists)) << again.error().String();
  EXPECT_EQ(ReadAll(key_path), before);
}

TEST(FileKeyStoreTest, LeftoverTempFileIsNotAKey) {
  // What a crash between write and rename leaves behind.
  TempDir tmp;
  WriteText(tmp.path() / "device.key.tmp-0123456789ab", "-----BEGIN PRIVATE KEY-----\nMIG");
  KeyStoreOptions options;
  options.state_dir = tmp.path().string();
  auto store = OpenKeyStore("file", options);
  ASSERT_TRUE(store);
  auto loaded = (*store)->Load();
  ASSERT_FALSE(loaded);
  EXPECT_TRUE(loaded.error().Is(Errc::kNotFound));
  EXPECT_TRUE((*store)->Generate());
  EXPECT_TRUE((*store)->Load());
}

TEST(FileKeyStoreTest, LoadRefusesAKeyReadableByOthers) {
  TempDir tmp;
  const fs::path key_path = tmp.path() / "key.pem";
  auto store = OpenKeyStore("file:" + key_path.string(), {});
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->Generate());
  ASSERT_EQ(::chmod(key_path.c_str(), 0644), 0);
  auto loaded = (*store)->Load();
  ASSERT_FALSE(loaded);
  EXPECT_TRUE(loaded.error().Is(Errc::kPermissionDenied));
  EXPECT_NE(loaded.error().message().find("chmod 600"), std::string::npos)
      << loaded.error().message();
}

TEST(FileKeyStoreTest, LoadRejectsGarbageAndOtherCurves) {
  TempDir tmp;
  const fs::path key_path = tmp.path() / "key.pem";
  auto store = OpenKeyStore("file:" + key_path.string(), {});
  ASSERT_TRUE(store);

  WriteText(key_path, "not a key");
  ASSERT_EQ(::chmod(key_path.c_str(), 0600), 0);
  auto garbage = (*store)->Load();
  ASSERT_FALSE(garbage);
  EXPECT_FALSE(garbage.error().Is(Errc::kNotFound));

  EvpPkeyPtr p384(EVP_EC_gen("P-384"));
  ASSERT_TRUE(p384);
  auto pem = PrivateKeyToPem(p384.get());
  ASSERT_TRUE(pem);
  WriteText(key_path, *pem);
  auto wrong_curve = (*store)->Load();
  ASSERT_FALSE(wrong_curve);
  EXPECT_TRUE(wrong_curve.error().Is(Errc::kInvalidArgument)) << wrong_curve.error().String();
}

TEST(KeyStoreSpecTest, RejectsBadSpecs) {
  EXPECT_TRUE(OpenKeyStore("file", {}).error().Is(Errc::kInvalidArgument));  // no state_dir
  EXPECT_TRUE(OpenKeyStore("file:relative/key.pem", {}).error().Is(Errc::kInvalidArgument));
  EXPECT_TRUE(OpenKeyStore("tpm:0x81000001", {}).error().Is(Errc::kInvalidArgument));
  EXPECT_TRUE(OpenKeyStore("pkcs11:object=x", {}).error().Is(Errc::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------------
// PKCS#11 URI

TEST(Pkcs11UriTest, ParsesPathAndQueryAttributes) {
  auto uri = ParsePkcs11Uri(
      "pkcs11:token=My%20Token;object=device;id=%01%A0;type=private;serial=ABC"
      "?pin-value=12%3B4&module-path=/opt/m.so");
  ASSERT_TRUE(uri) << uri.error().String();
  EXPECT_EQ(uri->token, "My Token");
  EXPECT_EQ(uri->object, "device");
  ASSERT_TRUE(uri->id);
  EXPECT_EQ(*uri->id, std::string("\x01\xa0", 2));
  EXPECT_EQ(uri->serial, "ABC");
  EXPECT_EQ(uri->pin, "12;4");
  EXPECT_EQ(uri->module_path, "/opt/m.so");
  // The canonical form never carries the PIN or the module.
  EXPECT_EQ(uri->ToString(),
            "pkcs11:serial=ABC;token=My%20Token;object=device;id=%01%A0;type=private");

  auto in_path = ParsePkcs11Uri("pkcs11:token=t;object=o;pin-value=1234");
  ASSERT_TRUE(in_path);
  EXPECT_EQ(in_path->pin, "1234");
}

TEST(Pkcs11UriTest, RejectsWhatCouldSelectTheWrongKey) {
  for (const char* bad : {"pkcs11:token=t;object=a;object=b",   // repeated
                          "pkcs11:token=t;object=o;slot-id=3",  // unsupported constraint
                          "pkcs11:token=t;object=o;type=public",
                          "pkcs11:token=t",             // which key?
                          "pkcs11:object=o",            // which token?
                          "pkcs11:token=t;object=o%2",  // broken escape
                          "pkcs11:token=t;object", "file:token=t"}) {
    auto uri = ParsePkcs11Uri(bad);
    ASSERT_FALSE(uri) << bad;
    EXPECT_TRUE(uri.error().Is(Errc::kInvalidArgument)) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Machine fingerprint

TEST(FingerprintTest, HashesLabelledNormalizedSources) {
  TempDir tmp;
  FingerprintSources src;
  src.machine_id = (tmp.path() / "machine-id").string();
  src.product_uuid = (tmp.path() / "product_uuid").string();
  src.product_serial = (tmp.path() / "absent").string();
  WriteText(src.machine_id, "0123abcd\n");
  WriteText(src.product_uuid, "4C4C4544-0042-3510-8052-B4C04F4D3132\n");
  auto fp = MachineFingerprint(src);
  ASSERT_TRUE(fp) << fp.error().String();
  // sha256("torwart-machine-fingerprint-v1\nmachine-id=0123abcd\nproduct-uuid=4c4c...3132\n"):
  // pinned so a format change is a deliberate one (it re-identifies every device).
  EXPECT_EQ(*fp, "16f75324909bbdb024b41be769283f99deb628a2a84471f2b2d2b7f299f80aa0");

  // A placeholder UUID counts as absent.
  WriteText(src.product_uuid, "00000000-0000-0000-0000-000000000000\n");
  auto no_uuid = MachineFingerprint(src);
  ASSERT_TRUE(no_uuid);
  EXPECT_EQ(*no_uuid, "b9276bd7daf85ac928d841eddf540d95a574dee3fd598767dfbb4affd751b877");

  WriteText(src.product_serial, "To Be Filled By O.E.M.\n");
  EXPECT_EQ(MachineFingerprint(src).value(), *no_uuid);
  WriteText(src.product_serial, "SN-42\n");
  EXPECT_NE(MachineFingerprint(src).value(), *no_uuid);

  WriteText(src.machine_id, "0123abce\n");
  EXPECT_NE(MachineFingerprint(src).value(), *fp);
}

TEST(FingerprintTest, NeedsAMachineId) {
  TempDir tmp;
  FingerprintSources src;
  src.machine_id = (tmp.path() / "missing").string();
  auto fp = MachineFingerprint(src);
  ASSERT_FALSE(fp);
  EXPECT_TRUE(fp.error().Is(Errc::kNotFound));
  WriteText(src.machine_id, "\n");
  EXPECT_FALSE(MachineFingerprint(src));
}

// ---------------------------------------------------------------------------------------------
// PKCS#11 against SoftHSM2

int RunQuiet(const std::string& command) {
  int status = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Capture(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[512];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// One token per test process: SoftHSM reads SOFTHSM2_CONF once, at C_Initialize.
class Pkcs11KeyStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (RunQuiet("command -v softhsm2-util") != 0) {
      skip_reason_ = "softhsm2-util is not installed (apt-get install softhsm2)";
      return;
    }
    if (!fs::exists(kSoftHsmModule)) {
      skip_reason_ = std::string(kSoftHsmModule) + " is missing";
      return;
    }
    dir_ = new TempDir();
    const fs::path conf = dir_->path() / "softhsm2.conf";
    fs::create_directories(dir_->path() / "tokens");
    WriteText(conf, "directories.tokendir = " + (dir_->path() / "tokens").string() +
                        "\nobjectstore.backend = file\nlog.level = ERROR\n");
    ::setenv("SOFTHSM2_CONF", conf.c_str(), 1);
    int rc = RunQuiet("softhsm2-util --init-token --free --label t --pin 1234 --so-pin 5678");
    ASSERT_EQ(rc, 0) << "softhsm2-util --init-token failed";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static KeyStoreOptions Options(std::string pin = "1234") {
    KeyStoreOptions o;
    o.pkcs11_module = kSoftHsmModule;
    o.pin = std::move(pin);
    return o;
  }
  static std::unique_ptr<KeyStore> Open(const std::string& uri, const KeyStoreOptions& options) {
    auto store = OpenKeyStore(uri, options);
    EXPECT_TRUE(store) << store.error().String();
    return store ? std::move(*store) : nullptr;
  }

  static inline TempDir* dir_ = nullptr;
  static inline std::string skip_reason_;
};

// Reads attributes of a private key straight from the module, as an attacker with the PIN would.
struct KeyAttributes {
  CK_RV value_rv = CKR_OK;  // result of asking for CKA_VALUE (the private scalar)
  bool sensitive = false;
  bool extractable = true;
  bool never_extractable = false;
  bool token = false;
};
KeyAttributes ReadKeyAttributes(const std::string& label) {
  KeyAttributes out;
  // Same handle as the store's: the module is already initialized in this process.
  void* lib = ::dlopen(kSoftHsmModule, RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(lib, nullptr);
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib, "C_GetFunctionList"));
  CK_FUNCTION_LIST* f = nullptr;
  EXPECT_EQ(get_list(&f), CKR_OK);
  CK_RV rv = f->C_Initialize(nullptr);
  EXPECT_TRUE(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  EXPECT_EQ(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  CK_SESSION_HANDLE s = 0;
  for (CK_ULONG i = 0; i < n; ++i) {
    CK_TOKEN_INFO info{};
    f->C_GetTokenInfo(slots[i], &info);
    if (std::string(reinterpret_cast<char*>(info.label), 2) == "t ") {
      EXPECT_EQ(f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, nullptr, nullptr, &s), CKR_OK);
    }
  }
  std::string pin = "1234";
  rv = f->C_Login(s, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()), pin.size());
  EXPECT_TRUE(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  std::string l = label;
  CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, l.data(), l.size()}};
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG found = 0;
  f->C_FindObjectsInit(s, find, 2);
  f->C_FindObjects(s, &key, 1, &found);
  f->C_FindObjectsFinal(s);
  EXPECT_EQ(found, 1u);
  unsigned char value[256];
  CK_ATTRIBUTE value_attr{CKA_VALUE, value, sizeof(value)};
  out.value_rv = f->C_GetAttributeValue(s, key, &value_attr, 1);
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never = CK_FALSE, token = CK_FALSE;
  CK_ATTRIBUTE flags[] = {{CKA_SENSITIVE, &sensitive, 1},
                          {CKA_EXTRACTABLE, &extractable, 1},
                          {CKA_NEVER_EXTRACTABLE, &never, 1},
                          {CKA_TOKEN, &token, 1}};
  EXPECT_EQ(f->C_GetAttributeValue(s, key, flags, 4), CKR_OK);
  out.sensitive = sensitive == CK_TRUE;
  out.extractable = extractable == CK_TRUE;
  out.never_extractable = never == CK_TRUE;
  out.token = token == CK_TRUE;
  f->C_CloseSession(s);
  return out;
}

// A self-signed certificate for `key` (which may live on the token).
X509Ptr SelfSigned(EVP_PKEY* key, const char* cn) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_set_pubkey(cert.get(), key);
  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) return nullptr;
  return cert;
}

TEST_F(Pkcs11KeyStoreTest, GeneratesNonExtractableKeyThatSignsCsrs) {
  auto store = Open("pkcs11:token=t;object=device;id=%01?pin-value=ignored", Options());
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->Extractable());
  EXPECT_EQ(store->Describe(), "pkcs11:token=t;object=device;id=%01;type=private");

  auto missing = store->Load();
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().Is(Errc::kNotFound)) << missing.error().String();

  auto generated = store->Generate();
  ASSERT_TRUE(generated) << generated.error().String();
  auto loaded = store->Load();
  ASSERT_TRUE(loaded) << loaded.error().String();
  EXPECT_EQ(EVP_PKEY_eq(generated->get(), loaded->get()), 1);
  EXPECT_EQ(EVP_PKEY_get_base_id(loaded->get()), EVP_PKEY_EC);
  ExpectSignsAndVerifies(loaded->get());
  ExpectCsrVerifies(loaded->get());

  auto again = store->Generate();
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().Is(Errc::kAlreadyExists)) << again.error().String();

  // The private scalar cannot be read: not through PKCS#11, not through pkcs11-tool...
  KeyAttributes attrs = ReadKeyAttributes("device");
  EXPECT_EQ(attrs.value_rv, static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE));
  EXPECT_TRUE(attrs.sensitive);
  EXPECT_FALSE(attrs.extractable);
  EXPECT_TRUE(attrs.never_extractable);
  EXPECT_TRUE(attrs.token);
  // An independent tool agrees on the key's attributes.
  std::string listing = Capture(std::string("pkcs11-tool --module ") + kSoftHsmModule +
                                " --token-label t --login --pin 1234 --list-objects"
                                " --type privkey --label device 2>/dev/null");
  EXPECT_NE(listing.find("never extractable"), std::string::npos) << listing;
  // ...and OpenSSL has only a placeholder: a PEM export of the EVP_PKEY carries no usable
  // private scalar (libp11 writes zeros), so the "exported" key cannot sign.
  auto pem = PrivateKeyToPem(loaded->get());
  if (pem) {
    auto exported = PrivateKeyFromPem(*pem);
    if (exported) {
      std::string sig = SignSha256(exported->get(), "x");
      EvpPkeyPtr pub = PublicOnly(loaded->get());
      EXPECT_FALSE(!sig.empty() && VerifySha256(pub.get(), "x", sig));
    }
  }
  ERR_clear_error();
}

TEST_F(Pkcs11KeyStoreTest, TokenKeyWorksForTlsClientAuthAndCmp) {
  auto store = Open("pkcs11:token=t;object=tls", Options());
  ASSERT_TRUE(store);
  auto key = store->Generate();
  ASSERT_TRUE(key) << key.error().String();
  X509Ptr client_cert = SelfSigned(key->get(), "device");
  ASSERT_TRUE(client_cert) << OpenSslErrorString();

  auto server_key = GenerateP256Key();
  ASSERT_TRUE(server_key);
  X509Ptr server_cert = SelfSigned(server_key->get(), "server");
  ASSERT_TRUE(server_cert);

  using SslCtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
  using SslPtr = std::unique_ptr<SSL, decltype(&SSL_free)>;
  SslCtxPtr cctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  SslCtxPtr sctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  for (SSL_CTX* c : {cctx.get(), sctx.get()}) {
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  }
  ASSERT_EQ(SSL_CTX_use_certificate(cctx.get(), client_cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(cctx.get(), key->get()), 1) << OpenSslErrorString();
  ASSERT_EQ(SSL_CTX_check_private_key(cctx.get()), 1);
  ASSERT_EQ(SSL_CTX_use_certificate(sctx.get(), server_cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(sctx.get(), server_key->get()), 1);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(sctx.get()), client_cert.get());
  SSL_CTX_set_verify(sctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

  SslPtr client(SSL_new(cctx.get()), SSL_free);
  SslPtr server(SSL_new(sctx.get()), SSL_free);
  BIO* cbio = nullptr;
  BIO* sbio = nullptr;
  ASSERT_EQ(BIO_new_bio_pair(&cbio, 0, &sbio, 0), 1);
  SSL_set_bio(client.get(), cbio, cbio);
  SSL_set_bio(server.get(), sbio, sbio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  bool client_done = false;
  bool server_done = false;
  for (int i = 0; i < 20 && !(client_done && server_done); ++i) {
    if (!client_done) {
      int rc = SSL_do_handshake(client.get());
      client_done = rc == 1;
      ASSERT_TRUE(client_done || SSL_get_error(client.get(), rc) == SSL_ERROR_WANT_READ)
          << OpenSslErrorString();
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server.get());
      server_done = rc == 1;
      ASSERT_TRUE(server_done || SSL_get_error(server.get(), rc) == SSL_ERROR_WANT_READ)
          << OpenSslErrorString();
    }
  }
  ASSERT_TRUE(client_done && server_done);
  // TLS 1.3: the client proved possession with an ECDSA CertificateVerify made on the token.
  EXPECT_EQ(SSL_version(server.get()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_get_verify_result(server.get()), X509_V_OK);
  X509* peer = SSL_get0_peer_certificate(server.get());
  ASSERT_NE(peer, nullptr);
  EXPECT_EQ(X509_cmp(peer, client_cert.get()), 0);

  std::unique_ptr<OSSL_CMP_CTX, decltype(&OSSL_CMP_CTX_free)> cmp(
      OSSL_CMP_CTX_new(nullptr, nullptr), OSSL_CMP_CTX_free);
  ASSERT_TRUE(cmp);
  EXPECT_EQ(OSSL_CMP_CTX_set1_pkey(cmp.get(), key->get()), 1);
  EXPECT_EQ(OSSL_CMP_CTX_set1_cert(cmp.get(), client_cert.get()), 1);
}

TEST_F(Pkcs11KeyStoreTest, SecondKeyInTheSameProcessLoads) {
  // Key rotation: a process that already signed with one token key generates and uses another.
  auto first = Open("pkcs11:token=t;object=first", Options());
  ASSERT_TRUE(first);
  auto k1 = first->Generate();
  ASSERT_TRUE(k1) << k1.error().String();
  ExpectSignsAndVerifies(k1->get());
  auto second = Open("pkcs11:token=t;object=second", Options());
  ASSERT_TRUE(second);
  auto k2 = second->Generate();
  ASSERT_TRUE(k2) << k2.error().String();
  EXPECT_NE(EVP_PKEY_eq(k1->get(), k2->get()), 1);
  ExpectSignsAndVerifies(k2->get());
  auto k1_again = first->Load();
  ASSERT_TRUE(k1_again) << k1_again.error().String();
  EXPECT_EQ(EVP_PKEY_eq(k1->get(), k1_again->get()), 1);
}

TEST_F(Pkcs11KeyStoreTest, ClearErrors) {
  // Run alone (as ctest does) this is the token's own PIN check; after other tests it is the
  // check against the PIN this process logged in with. Both must refuse.
  auto wrong_first = Open("pkcs11:token=t;object=errs", Options("4321"))->Generate();
  ASSERT_FALSE(wrong_first);
  EXPECT_TRUE(wrong_first.error().Is(Errc::kUnauthenticated)) << wrong_first.error().String();

  // Make sure a key exists so that only the named fault differs.
  auto good = Open("pkcs11:token=t;object=errs", Options());
  ASSERT_TRUE(good);
  ASSERT_TRUE(good->Generate());

  auto wrong_pin = Open("pkcs11:token=t;object=errs", Options("9999"))->Load();
  ASSERT_FALSE(wrong_pin);
  EXPECT_TRUE(wrong_pin.error().Is(Errc::kUnauthenticated)) << wrong_pin.error().String();
  EXPECT_NE(wrong_pin.error().message().find("wrong PIN"), std::string::npos);

  auto no_pin = Open("pkcs11:token=t;object=errs", Options(""))->Load();
  ASSERT_FALSE(no_pin);
  EXPECT_TRUE(no_pin.error().Is(Errc::kUnauthenticated)) << no_pin.error().String();

  auto no_token = Open("pkcs11:token=nope;object=errs", Options())->Load();
  ASSERT_FALSE(no_token);
  EXPECT_TRUE(no_token.error().Is(Errc::kNotFound));
  EXPECT_NE(no_token.error().message().find("token 'nope' not found"), std::string::npos)
      << no_token.error().message();
  EXPECT_NE(no_token.error().message().find("'t'"), std::string::npos);

  auto no_key = Open("pkcs11:token=t;object=absent", Options())->Load();
  ASSERT_FALSE(no_key);
  EXPECT_TRUE(no_key.error().Is(Errc::kNotFound));
  EXPECT_NE(no_key.error().message().find("no private key 'absent'"), std::string::npos)
      << no_key.error().message();

  KeyStoreOptions bad_module = Options();
  bad_module.pkcs11_module = "/nonexistent/libpkcs11.so";
  auto no_module = Open("pkcs11:token=t;object=errs", bad_module)->Load();
  ASSERT_FALSE(no_module);
  EXPECT_TRUE(no_module.error().Is(Errc::kNotFound));
  EXPECT_NE(no_module.error().message().find("module /nonexistent/libpkcs11.so not found"),
            std::string::npos)
      << no_module.error().message();

  // The good store still works after the failures (a wrong PIN must not poison the engine).
  auto key = good->Load();
  ASSERT_TRUE(key) << key.error().String();
  ExpectSignsAndVerifies(key->get());
}

}  // namespace
}  // namespace torwart::pki
