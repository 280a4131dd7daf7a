// Stream recordings: writer (a background thread compresses, chains, writes and syncs chunks),
// reader (verifies the chain, the trailer and the signature with bounded inflation) and the text
// and JSON renderings. The file format is in docs/design/recording.md.
#include "torwart/tunnel/recording.hpp"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "torwart/core/clock.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/tunnel/modbus_guard.hpp"

namespace torwart::tunnel {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kMagic = "TORWREC";  // followed by the version byte
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderFixed = 12;  // magic 7, version 1, meta length 4
constexpr size_t kMaxMeta = 64 * 1024;
constexpr size_t kChunkHeader = 17;    // type 1, compressed length 4, seq 8, raw length 4
constexpr size_t kTrailerHeader = 13;  // type 1, body length 4, chunk count 8
constexpr size_t kHash = 32;
constexpr size_t kMaxSignature = 512;
constexpr size_t kMaxTrailerBody = 2 + 4096 + 8 + 8 + 8;
constexpr size_t kItemHeader = 14;        // kind 1, dir 1, t_ms 8, length 4
constexpr size_t kMaxChunkRaw = 1 << 20;  // reader limit per chunk (decompressed)
constexpr uint64_t kMaxTotalRaw = uint64_t{1} << 30;
constexpr uint64_t kMaxItems = uint64_t{16} << 20;
constexpr char kChunkType = 'C';
constexpr char kTrailerType = 'T';

// Writer tuning: a chunk is cut when this much is buffered; items are split to fit.
constexpr size_t kFlushBytes = 64 * 1024;
constexpr size_t kMaxItemPayload = 64 * 1024;
constexpr size_t kBackpressureBytes = 16u << 20;  // OnData waits above this (disk slower than net)
constexpr std::chrono::milliseconds kFlushInterval{1000};

size_t MaxCompressed() { return compressBound(kMaxChunkRaw); }

void PutU16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}
void PutU32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetN(std::string_view s, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

std::string Sha256(std::initializer_list<std::string_view> parts) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char md[32];
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) std::abort();
  for (std::string_view p : parts) EVP_DigestUpdate(ctx.get(), p.data(), p.size());
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1 || len != 32) std::abort();
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string MetaJson(const RecordingMeta& m) {
  Json j = {{"v", 1},
            {"stream", m.stream_id},
            {"grant", m.grant_id},
            {"user", m.user},
            {"device", m.device_id},
            {"site", m.site},
            {"target", m.target},
            {"protocol", m.protocol},
            {"scopes", m.scopes},
            {"started_ms", m.started_ms}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Digest the device key signs: SHA-256(chain head || SHA-256(meta JSON)).
std::string SignedDigest(std::string_view head, std::string_view meta_json) {
  return Sha256({head, Sha256({meta_json})});
}

void AppendItem(std::string& out, RecordedItem::Kind kind, Direction dir, int64_t t_ms,
                std::string_view bytes) {
  out.push_back(kind == RecordedItem::Kind::kData ? 0 : 1);
  out.push_back(static_cast<char>(dir));
  PutU64(out, static_cast<uint64_t>(t_ms));
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out.append(bytes);
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

class Writer final : public RecordingWriter {
 public:
  Writer(int fd, std::string meta_json, std::string head, RecordingSigner signer,
         uint64_t header_bytes)
      : fd_(fd),
        meta_json_(std::move(meta_json)),
        head_(std::move(head)),
        signer_(std::move(signer)),
        bytes_written_(header_bytes) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }

  void OnData(Direction d, std::string_view data) override {
    int64_t t = NowMs();
    while (!data.empty()) {
      size_t n = std::min(data.size(), kMaxItemPayload);
      Add(RecordedItem::Kind::kData, d, t, data.substr(0, n), n);
      data.remove_prefix(n);
    }
  }
  void OnEvent(std::string_view type, std::string_view detail) override {
    std::string text(type);
    text += ' ';
    text.append(detail.substr(0, kMaxItemPayload - std::min(kMaxItemPayload, text.size())));
    Add(RecordedItem::Kind::kEvent, Direction::kToTarget, NowMs(), text, 0);
  }
  void Finish(std::string_view reason) override {
    {
      std::lock_guard lock(mu_);
      if (finishing_ || stop_) return;
      finishing_ = true;
      reason_ = std::string(reason.substr(0, 4096));
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  uint64_t bytes_written() const override { return bytes_written_.load(); }
  bool healthy() const override { return healthy_.load(); }

 private:
  void Add(RecordedItem::Kind kind, Direction d, int64_t t, std::string_view bytes,
           size_t data_bytes) {
    std::unique_lock lock(mu_);
    if (finishing_ || stop_ || !healthy_.load()) return;
    // Backpressure: the caller's I/O thread waits only when the disk falls far behind.
    space_cv_.wait(
        lock, [&] { return pending_.size() < kBackpressureBytes || stop_ || !healthy_.load(); });
    if (stop_ || !healthy_.load()) return;
    bool was_empty = pending_.empty();
    if (was_empty) first_pending_ = std::chrono::steady_clock::now();
    AppendItem(pending_, kind, d, t, bytes);
    ++items_;
    data_bytes_ += data_bytes;
    // Wake the writer thread to start the 1 s clock, and when a chunk's worth is buffered.
    if (was_empty || pending_.size() >= kFlushBytes) cv_.notify_all();
  }

  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || finishing_ || !pending_.empty(); });
      // Collect for up to a second after the oldest buffered item, or until a chunk is full.
      cv_.wait_until(lock, first_pending_ + kFlushInterval,
                     [&] { return stop_ || finishing_ || pending_.size() >= kFlushBytes; });
      std::string batch;
      batch.swap(pending_);
      bool finishing = finishing_, stop = stop_;
      uint64_t items = items_, data_bytes = data_bytes_;
      lock.unlock();
      space_cv_.notify_all();
      if (!batch.empty() && healthy_.load()) WriteChunks(batch);
      if (finishing && healthy_.load()) WriteTrailer(items, data_bytes);
      if (healthy_.load() && (!batch.empty() || finishing) && ::fdatasync(fd_) != 0) Fail();
      lock.lock();
      if ((finishing || stop) && pending_.empty()) return;
    }
  }

  // Splits the batch at item boundaries into chunks of about kFlushBytes.
  void WriteChunks(std::string_view batch) {
    while (!batch.empty() && healthy_.load()) {
      size_t cut = 0;
      while (cut < batch.size()) {
        size_t item = kItemHeader + GetN(batch, cut + 10, 4);
        if (cut > 0 && cut + item > kFlushBytes) break;
        cut += item;
      }
      WriteChunk(batch.substr(0, cut));
      batch.remove_prefix(cut);
    }
  }

  void WriteChunk(std::string_view raw) {
    // Level 1: most tunnelled traffic is encrypted (ssh) or already dense, and at level 6 zlib
    // was three quarters of the gateway's CPU in T1 (docs/PERFORMANCE.md); Modbus still shrinks.
    uLongf clen = compressBound(raw.size());
    std::string comp(clen, '\0');
    if (compress2(reinterpret_cast<Bytef*>(comp.data()), &clen,
                  reinterpret_cast<const Bytef*>(raw.data()), raw.size(), Z_BEST_SPEED) != Z_OK) {
      return Fail();
    }
    comp.resize(clen);
    std::string rec;
    rec.push_back(kChunkType);
    PutU32(rec, static_cast<uint32_t>(comp.size()));
    PutU64(rec, ++seq_);
    PutU32(rec, static_cast<uint32_t>(raw.size()));
    head_ = Sha256({head_, rec, comp});
    rec += comp;
    rec += head_;
    if (!WriteAll(fd_, rec)) return Fail();
    bytes_written_ += rec.size();
  }

  void WriteTrailer(uint64_t items, uint64_t data_bytes) {
    std::string rec;
    rec.push_back(kTrailerType);
    std::string body;
    PutU16(body, static_cast<uint16_t>(reason_.size()));
    body += reason_;
    PutU64(body, static_cast<uint64_t>(NowMs()));
    PutU64(body, items);
    PutU64(body, data_bytes);
    PutU32(rec, static_cast<uint32_t>(body.size()));
    PutU64(rec, seq_);
    rec += body;
    head_ = Sha256({head_, rec});
    rec += head_;
    std::string sig;
    if (signer_) {
      Expected<std::string> s = signer_(SignedDigest(head_, meta_json_));
      if (s && s->size() <= kMaxSignature) sig = std::move(*s);
      // A failed signature leaves an unsigned trailer: the chain still holds, the reader reports
      // signature_ok=false (and an error when it checks against the device key).
    }
    PutU16(rec, static_cast<uint16_t>(sig.size()));
    rec += sig;
    if (!WriteAll(fd_, rec)) return Fail();
    bytes_written_ += rec.size();
  }

  void Fail() {
    {
      std::lock_guard lock(mu_);
      healthy_ = false;
    }
    space_cv_.notify_all();
  }

  int fd_;
  const std::string meta_json_;
  std::string head_;  // writer thread only (after construction)
  uint64_t seq_ = 0;  // writer thread only
  RecordingSigner signer_;
  std::atomic<uint64_t> bytes_written_;
  std::atomic<bool> healthy_{true};

  std::mutex mu_;
  std::condition_variable cv_, space_cv_;
  std::string pending_;  // serialized items not yet in a chunk
  std::chrono::steady_clock::time_point first_pending_;
  uint64_t items_ = 0, data_bytes_ = 0;
  bool finishing_ = false, stop_ = false;
  std::string reason_;
  std::thread thread_;
};

// --- reading ---

Unexpected Damaged(std::string what) { return MakeError(Errc::kDataLoss, std::move(what)); }

std::string At(size_t offset) { return " at offset " + std::to_string(offset); }

Expected<RecordingMeta> ParseMeta(std::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Damaged("header: meta is not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer() || v->get<int64_t>() != 1) {
    return Damaged("header: meta version is not 1");
  }
  RecordingMeta m;
  struct Field {
    const char* name;
    std::string* out;
  } fields[] = {{"stream", &m.stream_id}, {"grant", &m.grant_id}, {"user", &m.user},
                {"device", &m.device_id}, {"site", &m.site},      {"target", &m.target},
                {"protocol", &m.protocol}};
  for (const Field& f : fields) {
    auto it = j.find(f.name);
    if (it == j.end()) continue;
    if (!it->is_string()) return Damaged(std::string("header: meta \"") + f.name + "\" not text");
    *f.out = it->get<std::string>();
  }
  if (auto it = j.find("scopes"); it != j.end()) {
    if (!it->is_array()) return Damaged("header: meta \"scopes\" is not a list");
    for (const Json& s : *it) {
      if (!s.is_string()) return Damaged("header: meta \"scopes\" holds a non-text entry");
      m.scopes.push_back(s.get<std::string>());
    }
  }
  if (auto it = j.find("started_ms"); it != j.end()) {
    if (!it->is_number_integer()) return Damaged("header: meta \"started_ms\" is not a number");
    m.started_ms = it->get<int64_t>();
  }
  return m;
}

// Inflates exactly `raw_len` bytes; anything else (more, less, trailing input) is damage.
bool Inflate(std::string_view comp, size_t raw_len, std::string& out) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return false;
  out.assign(raw_len, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(comp.data()));
  z.avail_in = static_cast<uInt>(comp.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(raw_len);
  int rc = inflate(&z, Z_FINISH);
  bool ok = rc == Z_STREAM_END && z.avail_in == 0 && z.total_out == raw_len;
  inflateEnd(&z);
  return ok;
}

}  // namespace

RecordingSigner SignerFromKey(EVP_PKEY* key) {
  return [key](std::string_view digest) -> Expected<std::string> {
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(key, nullptr),
                                                                    EVP_PKEY_CTX_free);
    size_t len = 0;
    if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_sign(ctx.get(), nullptr, &len,
                      reinterpret_cast<const unsigned char*>(digest.data()), digest.size()) != 1) {
      return MakeError(Errc::kInternal, "signing recording: " + OpenSslError());
    }
    std::string sig(len, '\0');
    if (EVP_PKEY_sign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                      reinterpret_cast<const unsigned char*>(digest.data()), digest.size()) != 1) {
      return MakeError(Errc::kInternal, "signing recording: " + OpenSslError());
    }
    sig.resize(len);
    return sig;
  };
}

Expected<std::unique_ptr<RecordingWriter>> RecordingWriter::Create(const std::string& path,
                                                                   const RecordingMeta& meta,
                                                                   RecordingSigner signer) {
  std::string meta_json = MetaJson(meta);
  if (meta_json.size() > kMaxMeta) {
    return MakeError(Errc::kInvalidArgument, "recording meta too large");
  }
  std::string header(kMagic);
  header.push_back(static_cast<char>(kVersion));
  PutU32(header, static_cast<uint32_t>(meta_json.size()));
  header += meta_json;

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return MakeError(errno == EEXIST ? Errc::kAlreadyExists : Errc::kIo,
                     "creating recording " + path + ": " + std::strerror(errno));
  }
  if (::fchmod(fd, 0600) != 0 || !WriteAll(fd, header) || ::fdatasync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return MakeError(Errc::kIo, "writing recording " + path + ": " + std::strerror(e));
  }
  // The directory entry must survive a crash too, or the synced chunks are unreachable.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  std::string head = Sha256({header});
  return std::unique_ptr<RecordingWriter>(
      new Writer(fd, std::move(meta_json), std::move(head), std::move(signer), header.size()));
}

Expected<Recording> ReadRecording(std::string_view file, EVP_PKEY* signer_public_key) {
  Recording r;
  if (file.size() < kMagic.size() || file.substr(0, kMagic.size()) != kMagic) {
    return MakeError(Errc::kParse, "not a torwart recording (bad magic)");
  }
  if (file.size() < kHeaderFixed) return Damaged("header truncated");
  if (static_cast<uint8_t>(file[7]) != kVersion) {
    return Damaged("header: unsupported version " + std::to_string(static_cast<uint8_t>(file[7])));
  }
  size_t meta_len = GetN(file, 8, 4);
  if (meta_len > kMaxMeta) return Damaged("header: meta length " + std::to_string(meta_len));
  if (file.size() < kHeaderFixed + meta_len) return Damaged("header truncated");
  std::string_view meta_json = file.substr(kHeaderFixed, meta_len);
  Expected<RecordingMeta> meta = ParseMeta(meta_json);
  if (!meta) return MakeError(meta.error());
  r.meta = std::move(*meta);
  std::string head = Sha256({file.substr(0, kHeaderFixed + meta_len)});

  size_t off = kHeaderFixed + meta_len;
  uint64_t seq = 0, total_raw = 0, data_bytes = 0;
  std::string raw;
  for (;;) {
    if (off == file.size()) {
      r.incomplete = "no trailer (the writer did not finish)";
      break;
    }
    std::string where = At(off);
    char type = file[off];
    if (type == kChunkType) {
      std::string name = "chunk " + std::to_string(seq + 1) + where;
      if (file.size() - off < kChunkHeader) {
        r.incomplete = name + " truncated";
        break;
      }
      size_t clen = GetN(file, off + 1, 4);
      uint64_t s = GetN(file, off + 5, 8);
      size_t raw_len = GetN(file, off + 13, 4);
      if (s != seq + 1) return Damaged(name + ": sequence number " + std::to_string(s));
      if (clen == 0 || clen > MaxCompressed() || raw_len == 0 || raw_len > kMaxChunkRaw) {
        return Damaged(name + ": impossible sizes (" + std::to_string(clen) + " compressed, " +
                       std::to_string(raw_len) + " raw)");
      }
      if (file.size() - off < kChunkHeader + clen + kHash) {
        r.incomplete = name + " truncated";
        break;
      }
      std::string_view comp = file.substr(off + kChunkHeader, clen);
      std::string computed = Sha256({head, file.substr(off, kChunkHeader), comp});
      if (computed != file.substr(off + kChunkHeader + clen, kHash)) {
        return Damaged(name + ": hash does not chain (altered or damaged)");
      }
      if (total_raw + raw_len > kMaxTotalRaw) {
        return MakeError(Errc::kResourceExhausted, name + ": recording exceeds 1 GiB");
      }
      if (!Inflate(comp, raw_len, raw)) return Damaged(name + ": compressed data damaged");
      total_raw += raw_len;
      for (size_t i = 0; i < raw.size();) {
        if (raw.size() - i < kItemHeader) return Damaged(name + ": item header truncated");
        uint8_t kind = static_cast<uint8_t>(raw[i]), dir = static_cast<uint8_t>(raw[i + 1]);
        size_t len = GetN(raw, i + 10, 4);
        if (kind > 1 || dir > 1 || (kind == 1 && dir != 0) || raw.size() - i - kItemHeader < len) {
          return Damaged(name + ": item at raw offset " + std::to_string(i) + " damaged");
        }
        if (r.items.size() >= kMaxItems) {
          return MakeError(Errc::kResourceExhausted, name + ": more than 16M items");
        }
        RecordedItem item;
        item.kind = kind == 0 ? RecordedItem::Kind::kData : RecordedItem::Kind::kEvent;
        item.dir = static_cast<Direction>(dir);
        item.t_ms = static_cast<int64_t>(GetN(raw, i + 2, 8));
        item.bytes.assign(raw, i + kItemHeader, len);
        if (kind == 0) data_bytes += len;
        r.items.push_back(std::move(item));
        i += kItemHeader + len;
      }
      head = std::move(computed);
      ++seq;
      off += kChunkHeader + clen + kHash;
    } else if (type == kTrailerType) {
      std::string name = "trailer" + where;
      if (file.size() - off < kTrailerHeader) {
        r.incomplete = name + " truncated";
        break;
      }
      size_t blen = GetN(file, off + 1, 4);
      uint64_t chunks = GetN(file, off + 5, 8);
      if (chunks != seq) return Damaged(name + ": chunk count " + std::to_string(chunks));
      if (blen < 2 + 24 || blen > kMaxTrailerBody) return Damaged(name + ": impossible length");
      if (file.size() - off < kTrailerHeader + blen + kHash + 2) {
        r.incomplete = name + " truncated";
        break;
      }
      std::string_view rec = file.substr(off, kTrailerHeader + blen);
      std::string computed = Sha256({head, rec});
      if (computed != file.substr(off + rec.size(), kHash)) {
        return Damaged(name + ": hash does not chain (altered or damaged)");
      }
      std::string_view body = rec.substr(kTrailerHeader);
      size_t rlen = GetN(body, 0, 2);
      if (body.size() != 2 + rlen + 24) return Damaged(name + ": body damaged");
      uint64_t items = GetN(body, 2 + rlen + 8, 8), bytes = GetN(body, 2 + rlen + 16, 8);
      if (items != r.items.size() || bytes != data_bytes) {
        return Damaged(name + ": item or byte count does not match the chunks");
      }
      size_t sig_at = off + rec.size() + kHash;
      size_t sig_len = GetN(file, sig_at, 2);
      if (sig_len > kMaxSignature || file.size() - sig_at - 2 < sig_len) {
        return Damaged(name + ": signature length " + std::to_string(sig_len));
      }
      if (file.size() != sig_at + 2 + sig_len) {
        return Damaged("trailing garbage" + At(sig_at + 2 + sig_len) + " after the trailer");
      }
      std::string_view sig = file.substr(sig_at + 2, sig_len);
      r.complete = true;
      r.end_reason = std::string(body.substr(2, rlen));
      head = std::move(computed);
      if (signer_public_key != nullptr) {
        if (sig.empty()) return Damaged(name + ": not signed");
        std::string digest = SignedDigest(head, meta_json);
        std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
            EVP_PKEY_CTX_new(signer_public_key, nullptr), EVP_PKEY_CTX_free);
        bool ok = ctx && EVP_PKEY_verify_init(ctx.get()) == 1 &&
                  EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) == 1 &&
                  EVP_PKEY_verify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()),
                                  sig.size(), reinterpret_cast<const unsigned char*>(digest.data()),
                                  digest.size()) == 1;
        ERR_clear_error();
        if (!ok) {
          return Damaged(name + ": signature does not verify with the device key" + At(sig_at + 2));
        }
        r.signature_ok = true;
      }
      break;
    } else {
      return Damaged("unknown record type" + where + " (damaged or trailing garbage)");
    }
  }
  r.chain_head = HexEncode(head);
  return r;
}

// --- rendering ---

namespace {

// Seconds.milliseconds since the start (the meta's, else the first item's); the values come
// from an untrusted file, so the subtraction is checked.
std::string Offset(const Recording& r, int64_t t_ms) {
  int64_t base = r.meta.started_ms;
  if (base == 0 && !r.items.empty()) base = r.items.front().t_ms;
  int64_t d = 0;
  if (__builtin_sub_overflow(t_ms, base, &d) || d == INT64_MIN) return "?";
  uint64_t mag = static_cast<uint64_t>(d < 0 ? -d : d);
  char b[64];
  std::snprintf(b, sizeof b, "%s%llu.%03u", d < 0 ? "-" : "",
                static_cast<unsigned long long>(mag / 1000), static_cast<unsigned>(mag % 1000));
  return b;
}

std::string StartTime(int64_t ms) {
  constexpr int64_t kYear9999 = 253402300799999;
  if (ms < 0 || ms > kYear9999) return std::to_string(ms) + " ms";
  return FormatRfc3339(TimePoint(std::chrono::milliseconds(ms)));
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", u);
      out += b;
    }
  }
  return out;
}

void HexDump(std::string& out, std::string_view data, std::string_view indent) {
  for (size_t row = 0; row < data.size(); row += 16) {
    char b[32];
    std::snprintf(b, sizeof b, "%06zx  ", row);
    out += indent;
    out += b;
    for (size_t i = 0; i < 16; ++i) {
      if (row + i < data.size()) {
        std::snprintf(b, sizeof b, "%02x ", static_cast<unsigned char>(data[row + i]));
        out += b;
      } else {
        out += "   ";
      }
      if (i == 7) out += ' ';
    }
    out += " |";
    for (size_t i = 0; i < 16 && row + i < data.size(); ++i) {
      auto u = static_cast<unsigned char>(data[row + i]);
      out += (u >= 0x20 && u < 0x7f) ? static_cast<char>(u) : '.';
    }
    out += "|\n";
  }
}

// Decodes Modbus per direction, keeping partial ADUs; a direction whose framing breaks falls
// back to hex for the rest of the recording.
class ModbusView {
 public:
  struct Out {
    std::vector<std::string> lines;
    std::string hex;  // bytes not decodable as Modbus
  };
  Out Feed(Direction d, std::string_view data) {
    Out o;
    int i = static_cast<int>(d);
    if (broken_[i]) {
      o.hex = std::string(data);
      return o;
    }
    buf_[i].append(data);
    ModbusDecoded dec = DecodeModbus(buf_[i], d == Direction::kFromTarget);
    o.lines = std::move(dec.lines);
    buf_[i].erase(0, dec.consumed);
    if (dec.malformed) {
      broken_[i] = true;
      o.lines.push_back("malformed Modbus/TCP framing; the rest of this direction as hex");
      o.hex = std::move(buf_[i]);
      buf_[i].clear();
    }
    return o;
  }
  size_t Pending(Direction d) const { return buf_[static_cast<int>(d)].size(); }

 private:
  std::string buf_[2];
  bool broken_[2] = {false, false};
};

}  // namespace

std::string RenderRecordingText(const Recording& r) {
  const RecordingMeta& m = r.meta;
  std::string out = "recording of stream " + Printable(m.stream_id) + "\n";
  out += "  user " + Printable(m.user) + ", grant " + Printable(m.grant_id) + "\n";
  out += "  device " + Printable(m.device_id) + ", site " + Printable(m.site) + ", target " +
         Printable(m.target) + " (" + Printable(m.protocol) + ")\n";
  std::string scopes;
  for (const std::string& s : m.scopes) scopes += (scopes.empty() ? "" : ", ") + Printable(s);
  out += "  scopes " + (scopes.empty() ? std::string("(whole protocol)") : scopes) + "\n";
  out += "  started " + StartTime(m.started_ms) + "\n";
  if (r.complete) {
    out += "  ended: " + Printable(r.end_reason) + "\n";
    out += std::string("  integrity: chain intact, ") +
           (r.signature_ok ? "signature verified with the device key" : "signature NOT checked") +
           "\n";
  } else {
    out += "  INCOMPLETE: " + Printable(r.incomplete) + " (chain intact up to there, unsigned)\n";
  }
  out += "  chain head " + r.chain_head + "\n\n";

  bool modbus = m.protocol == "modbus";
  ModbusView view;
  for (const RecordedItem& it : r.items) {
    std::string t = Offset(r, it.t_ms);
    if (it.kind == RecordedItem::Kind::kEvent) {
      out += t + "  **  " + Printable(it.bytes) + "\n";
      continue;
    }
    std::string arrow = it.dir == Direction::kToTarget ? "  ->  " : "  <-  ";
    if (!modbus) {
      out += t + arrow + std::to_string(it.bytes.size()) + " bytes\n";
      HexDump(out, it.bytes, "        ");
      continue;
    }
    ModbusView::Out o = view.Feed(it.dir, it.bytes);
    for (const std::string& line : o.lines) out += t + arrow + line + "\n";
    if (!o.hex.empty()) {
      out += t + arrow + std::to_string(o.hex.size()) + " bytes\n";
      HexDump(out, o.hex, "        ");
    }
  }
  if (modbus) {
    for (Direction d : {Direction::kToTarget, Direction::kFromTarget}) {
      if (size_t n = view.Pending(d)) {
        out += std::string("(") + (d == Direction::kToTarget ? "->" : "<-") + " " +
               std::to_string(n) + " bytes of an unfinished Modbus frame at the end)\n";
      }
    }
  }
  return out;
}

std::string RenderRecordingJson(const Recording& r) {
  const RecordingMeta& m = r.meta;
  Json j;
  j["meta"] = {{"stream", m.stream_id},  {"grant", m.grant_id}, {"user", m.user},
               {"device", m.device_id},  {"site", m.site},      {"target", m.target},
               {"protocol", m.protocol}, {"scopes", m.scopes},  {"started_ms", m.started_ms}};
  j["complete"] = r.complete;
  j["signature_ok"] = r.signature_ok;
  j["end_reason"] = r.end_reason;
  j["chain_head"] = r.chain_head;
  if (!r.complete) j["incomplete"] = r.incomplete;
  Json items = Json::array();
  bool modbus = m.protocol == "modbus";
  ModbusView view;
  for (const RecordedItem& it : r.items) {
    Json e = {{"t_ms", it.t_ms}};
    if (it.kind == RecordedItem::Kind::kEvent) {
      e["dir"] = "event";
      size_t sp = it.bytes.find(' ');
      e["type"] = it.bytes.substr(0, sp);
      e["detail"] = sp == std::string::npos ? "" : it.bytes.substr(sp + 1);
    } else {
      e["dir"] = it.dir == Direction::kToTarget ? "to_target" : "from_target";
      e["bytes"] = it.bytes.size();
      if (modbus) {
        ModbusView::Out o = view.Feed(it.dir, it.bytes);
        e["decoded"] = o.lines;
        if (!o.hex.empty()) e["hex"] = HexEncode(o.hex);
      } else {
        e["hex"] = HexEncode(it.bytes);
      }
    }
    items.push_back(std::move(e));
  }
  j["items"] = std::move(items);
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace torwart::tunnel
