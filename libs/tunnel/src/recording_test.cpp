#include "torwart/tunnel/recording.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <sys/stat.h>
#include <zlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "torwart/core/ids.hpp"

namespace torwart::tunnel {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Pkey NewKey() { return Pkey(EVP_EC_gen("P-256")); }

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int v : b) s.push_back(static_cast<char>(v));
  return s;
}
std::string Adu(uint16_t tx, uint8_t unit, std::string_view pdu) {
  std::string s = Bytes({tx >> 8, tx & 0xff, 0, 0, 0, static_cast<int>(pdu.size() + 1), unit});
  return s + std::string(pdu);
}

RecordingMeta Meta(std::string protocol = "modbus") {
  RecordingMeta m;
  m.stream_id = "st-0123456789abcdef";
  m.grant_id = "ar-0123456789ab";
  m.user = "max.wagner@werk.example";
  m.device_id = "0b7c6c3e-5d43-4a8e-9d36-0f5b1f8f7f10";
  m.site = "werk-1";
  m.target = "presse-1-plc";
  m.protocol = std::move(protocol);
  m.scopes = {"modbus:read"};
  m.started_ms = 1'760'000'000'000;
  return m;
}

class RecordingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/torwart-recording-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    key_ = NewKey();
    ASSERT_TRUE(key_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A small Modbus session: a read, its answer, a refused write and its exception.
  std::string WriteSession(const std::string& name, RecordingSigner signer) {
    std::string path = (dir_ / name).string();
    auto w = RecordingWriter::Create(path, Meta(), std::move(signer));
    EXPECT_TRUE(w) << w.error().String();
    (*w)->OnEvent("open", "{\"client\":\"10.0.0.5\"}");
    std::string read = Adu(1, 1, Bytes({3, 0, 0, 0, 2}));
    (*w)->OnData(Direction::kToTarget, read.substr(0, 5));  // split across two calls
    (*w)->OnData(Direction::kToTarget, read.substr(5));
    (*w)->OnData(Direction::kFromTarget, Adu(1, 1, Bytes({3, 4, 0, 42, 0x01, 0x2c})));
    (*w)->OnEvent("refused", "{\"function\":6,\"unit\":1,\"transaction\":2}");
    (*w)->OnData(Direction::kFromTarget, Adu(2, 1, Bytes({0x86, 0x01})));
    (*w)->Finish("client closed");
    EXPECT_TRUE((*w)->healthy());
    EXPECT_EQ((*w)->bytes_written(), fs::file_size(path));
    return path;
  }

  fs::path dir_;
  Pkey key_;
};

TEST_F(RecordingTest, RoundTripVerifiesAndDecodes) {
  std::string path = WriteSession("a.rec", SignerFromKey(key_.get()));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);

  std::string file = Read(path);
  Expected<Recording> r = ReadRecording(file, key_.get());
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_TRUE(r->complete);
  EXPECT_TRUE(r->signature_ok);
  EXPECT_EQ(r->end_reason, "client closed");
  EXPECT_EQ(r->chain_head.size(), 64u);
  EXPECT_EQ(r->meta.user, "max.wagner@werk.example");
  EXPECT_EQ(r->meta.scopes, std::vector<std::string>{"modbus:read"});
  EXPECT_EQ(r->meta.started_ms, 1'760'000'000'000);
  ASSERT_EQ(r->items.size(), 6u);
  EXPECT_EQ(r->items[0].kind, RecordedItem::Kind::kEvent);
  EXPECT_EQ(r->items[0].bytes, "open {\"client\":\"10.0.0.5\"}");
  EXPECT_EQ(r->items[1].dir, Direction::kToTarget);
  EXPECT_EQ(r->items[1].bytes.size(), 5u);
  EXPECT_EQ(r->items[3].dir, Direction::kFromTarget);
  EXPECT_GT(r->items[1].t_ms, 1'700'000'000'000);

  std::string text = RenderRecordingText(*r);
  EXPECT_THAT(text, HasSubstr("->  tx 1 unit 1 read holding registers addr 0 count 2"));
  EXPECT_THAT(text, HasSubstr("<-  tx 1 unit 1 response read holding registers values [42, 300]"));
  EXPECT_THAT(text, HasSubstr("**  refused {\"function\":6"));
  EXPECT_THAT(
      text, HasSubstr("<-  tx 2 unit 1 exception 01 (illegal function) for write single register"));
  EXPECT_THAT(text, HasSubstr("signature verified"));
  EXPECT_THAT(text, HasSubstr("ended: client closed"));

  auto j = nlohmann::json::parse(RenderRecordingJson(*r));
  EXPECT_EQ(j["meta"]["target"], "presse-1-plc");
  EXPECT_EQ(j["complete"], true);
  EXPECT_EQ(j["items"].size(), 6u);
  EXPECT_EQ(j["items"][0]["dir"], "event");
  EXPECT_EQ(j["items"][0]["type"], "open");
  EXPECT_EQ(j["items"][1]["decoded"].size(), 0u);  // half a frame
  EXPECT_EQ(j["items"][2]["decoded"][0], "tx 1 unit 1 read holding registers addr 0 count 2");
  EXPECT_EQ(j["items"][3]["dir"], "from_target");

  // Without a key the chain is still checked, the signature is not.
  r = ReadRecording(file, nullptr);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->complete);
  EXPECT_FALSE(r->signature_ok);
  // Another device's key: tampering.
  Pkey other = NewKey();
  r = ReadRecording(file, other.get());
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kDataLoss));
  EXPECT_THAT(r.error().message(), HasSubstr("signature does not verify"));
}

TEST_F(RecordingTest, CreateRefusesAnExistingFile) {
  std::string path = (dir_ / "x.rec").string();
  std::ofstream(path) << "x";
  auto w = RecordingWriter::Create(path, Meta(), nullptr);
  ASSERT_FALSE(w);
  EXPECT_TRUE(w.error().Is(Errc::kAlreadyExists));
  EXPECT_EQ(Read(path), "x");
  fs::create_symlink(dir_ / "target", dir_ / "link.rec");
  EXPECT_FALSE(RecordingWriter::Create((dir_ / "link.rec").string(), Meta(), nullptr));
  EXPECT_FALSE(fs::exists(dir_ / "target"));
}

TEST_F(RecordingTest, EveryFlippedByteIsDetected) {
  std::string file = Read(WriteSession("a.rec", SignerFromKey(key_.get())));
  ASSERT_TRUE(ReadRecording(file, key_.get()));
  size_t errors = 0;
  for (size_t i = 0; i < file.size(); ++i) {
    for (int mask : {0x01, 0x80, 0xff}) {
      std::string bad = file;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      Expected<Recording> r = ReadRecording(bad, key_.get());
      if (!r) {
        ++errors;
        EXPECT_TRUE(r.error().Is(Errc::kDataLoss) || r.error().Is(Errc::kParse))
            << r.error().String();
        continue;
      }
      EXPECT_TRUE(!r->complete || !r->signature_ok) << "flip at " << i << " undetected";
      EXPECT_FALSE(r->complete && r->signature_ok);
    }
  }
  // Nearly all flips are hard errors (the rest turn the recording "incomplete").
  EXPECT_GT(errors, file.size() * 3 * 9 / 10);
}

TEST_F(RecordingTest, TamperingNamesChunkAndOffset) {
  std::string file = Read(WriteSession("a.rec", SignerFromKey(key_.get())));
  // The first chunk follows the header: magic 7 + version 1 + meta length 4 + meta.
  size_t meta_len = (static_cast<uint8_t>(file[10]) << 8) | static_cast<uint8_t>(file[11]);
  size_t chunk = 12 + meta_len;
  ASSERT_EQ(file[chunk], 'C');
  std::string bad = file;
  bad[chunk + 20] ^= 0x10;  // inside the compressed payload
  Expected<Recording> r = ReadRecording(bad, key_.get());
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kDataLoss));
  EXPECT_THAT(r.error().message(),
              HasSubstr("chunk 1 at offset " + std::to_string(chunk) + ": hash does not chain"));
  // The header is covered by the chain too: a changed user name breaks chunk 1.
  bad = file;
  size_t at = bad.find("max.wagner");
  bad[at] = 'm' ^ 'n' ^ bad[at];
  r = ReadRecording(bad, nullptr);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("chunk 1"));
  // Trailing garbage after a complete recording.
  r = ReadRecording(file + "x", nullptr);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kDataLoss));
  EXPECT_THAT(r.error().message(),
              HasSubstr("trailing garbage at offset " + std::to_string(file.size())));
  // The trailer: a changed end reason.
  bad = file;
  at = bad.rfind("client closed");
  bad[at] = 'C';
  r = ReadRecording(bad, nullptr);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("trailer at offset"));
  EXPECT_THAT(r.error().message(), HasSubstr("hash does not chain"));
}

TEST_F(RecordingTest, TruncationIsIncompleteNeverComplete) {
  std::string file = Read(WriteSession("a.rec", SignerFromKey(key_.get())));
  for (size_t n = 0; n < file.size(); ++n) {
    Expected<Recording> r = ReadRecording(std::string_view(file).substr(0, n), key_.get());
    if (r) {
      EXPECT_FALSE(r->complete) << n;
      EXPECT_FALSE(r->incomplete.empty());
    }
  }
}

TEST_F(RecordingTest, UnsignedTrailerFailsAgainstAKey) {
  std::string file = Read(WriteSession("u.rec", nullptr));
  Expected<Recording> r = ReadRecording(file, nullptr);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->complete);
  r = ReadRecording(file, key_.get());
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("not signed"));
}

TEST_F(RecordingTest, WithoutFinishTheRecordingIsIncompleteAndFlushedWithinASecond) {
  std::string path = (dir_ / "crash.rec").string();
  auto w = RecordingWriter::Create(path, Meta("ssh"), SignerFromKey(key_.get()));
  ASSERT_TRUE(w);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the writer thread is idle now
  (*w)->OnData(Direction::kToTarget, "SSH-2.0-OpenSSH_9.2\r\n");
  // No further calls: the writer thread must still put the data on disk (the 1 s rule).
  Expected<Recording> r = MakeError(Errc::kInternal, "not read yet");
  for (int i = 0; i < 100; ++i) {
    r = ReadRecording(Read(path), key_.get());
    if (r && !r->items.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(r) << r.error().String();
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_FALSE(r->complete);
  EXPECT_THAT(r->incomplete, HasSubstr("no trailer"));
  w->reset();  // destroyed without Finish, as in a crash
  r = ReadRecording(Read(path), key_.get());
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->complete);
  std::string text = RenderRecordingText(*r);
  EXPECT_THAT(text, HasSubstr("INCOMPLETE"));
  EXPECT_THAT(text, HasSubstr("53 53 48 2d 32 2e 30 2d"));  // hexdump of "SSH-2.0-"
  EXPECT_THAT(text, HasSubstr("|SSH-2.0-OpenSSH_"));
}

TEST_F(RecordingTest, LargeDataIsSplitIntoBoundedChunksAndItems) {
  std::string path = (dir_ / "big.rec").string();
  auto w = RecordingWriter::Create(path, Meta("tcp"), SignerFromKey(key_.get()));
  ASSERT_TRUE(w);
  std::mt19937 rng(1);
  std::string up(300 * 1024, '\0'), down;
  for (char& c : up) c = static_cast<char>(rng());
  for (int i = 0; i < 2000; ++i) down += "line " + std::to_string(i) + "\n";
  (*w)->OnData(Direction::kToTarget, up);
  (*w)->OnData(Direction::kFromTarget, down);
  (*w)->Finish("done");
  Expected<Recording> r = ReadRecording(Read(path), key_.get());
  ASSERT_TRUE(r) << r.error().String();
  ASSERT_TRUE(r->signature_ok);
  std::string got_up, got_down;
  for (const RecordedItem& it : r->items) {
    EXPECT_LE(it.bytes.size(), 64u * 1024);
    (it.dir == Direction::kToTarget ? got_up : got_down) += it.bytes;
  }
  EXPECT_EQ(got_up, up);
  EXPECT_EQ(got_down, down);
  EXPECT_GE(r->items.size(), 6u);
}

// Builds files by hand (the format from docs/design/recording.md) to test the reader's limits.
class Forge {
 public:
  Forge() {
    std::string meta = R"({"v":1,"protocol":"tcp"})";
    file_ = "TORWREC";
    file_.push_back(1);
    U32(file_, static_cast<uint32_t>(meta.size()));
    file_ += meta;
    head_ = Sha(file_);
  }
  // A chunk with the given declared raw length and compressed payload (hash chained correctly).
  void Chunk(uint32_t raw_len, const std::string& comp) {
    std::string h;
    h.push_back('C');
    U32(h, static_cast<uint32_t>(comp.size()));
    U64(h, ++seq_);
    U32(h, raw_len);
    head_ = Sha(head_ + h + comp);
    file_ += h + comp + head_;
  }
  static std::string Compress(const std::string& raw) {
    uLongf n = compressBound(raw.size());
    std::string out(n, '\0');
    compress2(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
              raw.size(), 9);
    out.resize(n);
    return out;
  }
  static std::string Item(std::string_view payload) {
    std::string s = Bytes({0, 0});
    U64(s, 1'760'000'000'000);
    U32(s, static_cast<uint32_t>(payload.size()));
    return s + std::string(payload);
  }
  const std::string& file() const { return file_; }

 private:
  static void U32(std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
  }
  static void U64(std::string& s, uint64_t v) {
    for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
  }
  static std::string Sha(const std::string& s) {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<char*>(md), len);
  }
  std::string file_, head_;
  uint64_t seq_ = 0;
};

TEST(RecordingReader, ForgedChunksWithinLimitsAreRead) {
  Forge f;
  std::string raw = Forge::Item("hello") + Forge::Item("world");
  f.Chunk(static_cast<uint32_t>(raw.size()), Forge::Compress(raw));
  Expected<Recording> r = ReadRecording(f.file(), nullptr);
  ASSERT_TRUE(r) << r.error().String();
  EXPECT_EQ(r->items.size(), 2u);
  EXPECT_FALSE(r->complete);
}

TEST(RecordingReader, ZipBombAndOversizedChunksAreRefused) {
  // 10 MiB of zeros compress to ~10 KiB; the chunk claims 1 MiB (the limit).
  std::string bomb = Forge::Compress(Forge::Item(std::string(10 << 20, '\0')));
  Forge f;
  f.Chunk(1 << 20, bomb);
  Expected<Recording> r = ReadRecording(f.file(), nullptr);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kDataLoss));
  EXPECT_THAT(r.error().message(), HasSubstr("chunk 1 at offset"));
  EXPECT_THAT(r.error().message(), HasSubstr("compressed data damaged"));

  Forge g;
  g.Chunk((1 << 20) + 1, bomb);
  r = ReadRecording(g.file(), nullptr);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("impossible sizes"));

  // Declared raw length shorter than the real data, and trailing bytes after the zlib stream.
  std::string raw = Forge::Item("abcdef");
  Forge h;
  h.Chunk(static_cast<uint32_t>(raw.size() - 1), Forge::Compress(raw));
  EXPECT_FALSE(ReadRecording(h.file(), nullptr));
  Forge k;
  k.Chunk(static_cast<uint32_t>(raw.size()), Forge::Compress(raw) + "x");
  EXPECT_FALSE(ReadRecording(k.file(), nullptr));
  // An item longer than its chunk.
  std::string item = Forge::Item("abcdef");
  item[13] = 7;
  Forge m;
  m.Chunk(static_cast<uint32_t>(item.size()), Forge::Compress(item));
  r = ReadRecording(m.file(), nullptr);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("item at raw offset 0 damaged"));
}

TEST(RecordingReader, NotARecording) {
  Expected<Recording> r = ReadRecording("hello world", nullptr);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kParse));
  EXPECT_FALSE(ReadRecording("", nullptr));
  EXPECT_FALSE(ReadRecording(std::string("TORWREC\x02", 8) + std::string(4, '\0'), nullptr));
}

TEST(RecordingRender, ModbusFramingErrorsFallBackToHex) {
  Recording r;
  r.meta.protocol = "modbus";
  r.complete = true;
  RecordedItem a;
  a.t_ms = 1500;
  a.bytes = Adu(1, 1, Bytes({3, 0, 0, 0, 1})) + "GARBAGE-NOT-MODBUS";
  RecordedItem b = a;
  b.t_ms = 2250;
  b.bytes = Adu(2, 1, Bytes({3, 0, 0, 0, 1}));
  r.items = {a, b};
  std::string text = RenderRecordingText(r);
  EXPECT_THAT(text, HasSubstr("0.000  ->  tx 1 unit 1 read holding registers addr 0 count 1"));
  EXPECT_THAT(text, HasSubstr("malformed Modbus/TCP framing"));
  EXPECT_THAT(text, HasSubstr("|GARBAGE-NOT-MODB|"));
  EXPECT_THAT(text, HasSubstr("0.750  ->  12 bytes"));  // later data of that direction: hex
  auto j = nlohmann::json::parse(RenderRecordingJson(r));
  EXPECT_EQ(j["items"][1]["hex"], HexEncode(b.bytes));
}

}  // namespace
}  // namespace torwart::tunnel
