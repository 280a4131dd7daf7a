// Fuzzes the recording reader and renderers (a recording comes from a gateway or a download and
// is untrusted). Byte 0 picks a mode, the rest is the input:
//   0: the bytes as a recording file, checked against a fixed public key and without one;
//   1: the same after re-computing every hash in the chain, so mutations reach inflation, item
//      parsing, the trailer and the renderers instead of stopping at the first hash;
//   2: the bytes as one chunk's decompressed items (byte 1 picks protocol modbus or tcp), wrapped
//      into a valid file without a trailer: item parsing and the Modbus rendering.
// The seed recording in corpus/fuzz_recording/ was signed by the key whose public half is below.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "torwart/tunnel/recording.hpp"

using namespace torwart::tunnel;

namespace {

constexpr char kSeedPublicKey[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE29v7qujB5YNqG8si+3wi3gE4P/HK\n"
    "2nDb3p477uqrSc5L58uiSykwwwfF5pOhOpPlRnGgdmxi6NRegO1X6oco5A==\n"
    "-----END PUBLIC KEY-----\n";

EVP_PKEY* SeedKey() {
  static EVP_PKEY* key = [] {
    BIO* bio = BIO_new_mem_buf(kSeedPublicKey, -1);
    EVP_PKEY* k = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return k;
  }();
  return key;
}

uint64_t Get(std::string_view s, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}
void Put(std::string& s, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
}
std::string Sha(std::string_view a, std::string_view b = {}, std::string_view c = {}) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, a.data(), a.size());
  EVP_DigestUpdate(ctx, b.data(), b.size());
  EVP_DigestUpdate(ctx, c.data(), c.size());
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return std::string(reinterpret_cast<char*>(md), len);
}

// Rewrites the stored hashes (format: docs/design/recording.md) where the framing allows.
std::string Rechain(std::string f) {
  if (f.size() < 12) return f;
  size_t off = 12 + Get(f, 8, 4);
  if (off > f.size()) return f;
  std::string head = Sha(std::string_view(f).substr(0, off));
  while (off < f.size()) {
    if (f[off] == 'C' && f.size() - off >= 17) {
      size_t clen = Get(f, off + 1, 4);
      if (f.size() - off - 17 < clen + 32) break;
      head = Sha(head, std::string_view(f).substr(off, 17),
                 std::string_view(f).substr(off + 17, clen));
      f.replace(off + 17 + clen, 32, head);
      off += 17 + clen + 32;
    } else if (f[off] == 'T' && f.size() - off >= 13) {
      size_t blen = Get(f, off + 1, 4);
      if (f.size() - off - 13 < blen + 32) break;
      head = Sha(head, std::string_view(f).substr(off, 13 + blen));
      f.replace(off + 13 + blen, 32, head);
      break;
    } else {
      break;
    }
  }
  return f;
}

std::string Wrap(std::string_view raw, bool modbus) {
  std::string meta =
      modbus ? R"({"v":1,"protocol":"modbus","started_ms":1000})" : R"({"v":1,"protocol":"tcp"})";
  std::string f = "TORWREC";
  f.push_back(1);
  Put(f, meta.size(), 4);
  f += meta;
  std::string head = Sha(f);
  if (!raw.empty()) {
    uLongf n = compressBound(raw.size());
    std::string comp(n, '\0');
    compress2(reinterpret_cast<Bytef*>(comp.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
              raw.size(), 1);
    comp.resize(n);
    std::string h = "C";
    Put(h, comp.size(), 4);
    Put(h, 1, 8);
    Put(h, raw.size(), 4);
    head = Sha(head, h, comp);
    f += h + comp + head;
  }
  return f;
}

void Exercise(std::string_view file) {
  for (EVP_PKEY* key : {SeedKey(), static_cast<EVP_PKEY*>(nullptr)}) {
    torwart::Expected<Recording> r = ReadRecording(file, key);
    if (r) {
      (void)RenderRecordingText(*r);
      (void)RenderRecordingJson(*r);
    } else if (r.error().message().empty()) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 3) {
    case 0:
      Exercise(in);
      break;
    case 1:
      Exercise(Rechain(std::string(in)));
      break;
    default:
      if (!in.empty()) {
        // Rendering works on whatever the reader accepted; parse it as items.
        Exercise(Wrap(in.substr(1), in[0] & 1));
      }
      break;
  }
  return 0;
}
