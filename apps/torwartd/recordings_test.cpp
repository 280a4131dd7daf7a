// Recording uploads against a real CA, a SQLite store and a MemorySink: device authentication,
// the tunnel session check, verification (verified / tampered, stored either way), idempotent
// retries, conflicts, and the files on disk.
#include "recordings.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "torwart/core/ids.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/recording.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kStream = "st-00000000000000a1";

std::string Slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Gateway {
  std::string id, serial, der;
  pki::EvpPkeyPtr key;
};

class RecordingsTest : public ::testing::Test {
 protected:
  RecordingsTest() : clock_(FromUnix(1795356412)) {
    dir_ = fs::temp_directory_path() / ("recordings_test_" + RandomToken(8));
    fs::create_directories(dir_);
    config_.data_dir = dir_.string();
    auto s = storage::OpenSqlite({.path = (dir_ / "t.db").string()});
    EXPECT_TRUE(s) << s.error().String();
    store_ = std::move(*s);
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.clock = &SystemClock::Instance();  // the CA checks certificates against real time
    ctx_.audit = &sink_;
    auto pki = MakePkiService(ctx_);
    EXPECT_TRUE(pki) << pki.error().String();
    pki_ = std::move(*pki);
    service_ =
        std::make_unique<RecordingService>(ctx_, *pki_, (dir_ / "recordings").string(), 1 << 20);
    EXPECT_TRUE(service_->Init());
    gw_ = AddGateway("gw-1");
    other_ = AddGateway("gw-2");
    OpenSession(kStream, gw_.id);
  }
  ~RecordingsTest() override {
    service_.reset();
    pki_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Gateway AddGateway(const std::string& name) {
    auto creds = pki_->IssueServiceCertificate(std::chrono::hours(1));
    EXPECT_TRUE(creds) << creds.error().String();
    auto cert = pki::CertFromPem(creds->cert_chain_pem);
    EXPECT_TRUE(cert);
    Gateway g;
    g.id = pki::SubjectCn(cert->get());
    g.serial = creds->serial;
    g.der = *pki::CertToDer(cert->get());
    g.key = std::move(*pki::PrivateKeyFromPem(creds->key_pem));
    storage::Device d;
    d.id = g.id;
    d.name = name;
    d.site = "plant-a";
    d.status = "enrolled";
    d.created = clock_.Now();
    EXPECT_TRUE(store_->devices().Create(d));
    storage::Certificate c;
    c.serial = g.serial;
    c.device_id = g.id;
    c.subject = pki::SubjectOneLine(cert->get());
    c.not_before = pki::NotBefore(cert->get());
    c.not_after = pki::NotAfter(cert->get());
    c.pem = *pki::CertToPem(cert->get());
    EXPECT_TRUE(store_->certificates().Insert(c));
    return g;
  }

  void OpenSession(const std::string& stream, const std::string& device) {
    storage::TunnelSession s;
    s.id = stream;
    s.grant_id = "ar-0123456789ab";
    s.user = "tech";
    s.device_id = device;
    s.site = "plant-a";
    s.target = "plc1";
    s.opened = clock_.Now();
    ASSERT_TRUE(store_->tunnels().Open(s));
  }

  // A finished recording of `stream` by `g`, with `payload` sent to the target.
  std::string Record(const Gateway& g, const std::string& stream, const std::string& payload) {
    tunnel::RecordingMeta meta;
    meta.stream_id = stream;
    meta.grant_id = "ar-0123456789ab";
    meta.user = "tech";
    meta.device_id = g.id;
    meta.site = "plant-a";
    meta.target = "plc1";
    meta.protocol = "raw";
    meta.started_ms = 1795356400000;
    const fs::path path = dir_ / ("rec-" + RandomToken(6));
    auto w =
        tunnel::RecordingWriter::Create(path.string(), meta, tunnel::SignerFromKey(g.key.get()));
    EXPECT_TRUE(w) << w.error().String();
    (*w)->OnData(tunnel::Direction::kToTarget, payload);
    (*w)->OnData(tunnel::Direction::kFromTarget, "answer");
    (*w)->Finish("closed by technician");
    w->reset();
    return Slurp(path);
  }

  http::Response Put(const Gateway* g, const std::string& stream, const std::string& body) {
    http::Request req;
    req.method = "PUT";
    req.target = "/api/v1/recordings/" + stream;
    req.path = req.target;
    req.params["id"] = stream;
    req.peer = "127.0.0.1:5555";
    req.body = body;
    if (g) req.client_cert_der = g->der;
    return service_->Upload(req);
  }

  std::vector<audit::Event> Events(const std::string& type) {
    std::vector<audit::Event> out;
    for (auto& e : sink_.events()) {
      if (e.type == type) out.push_back(e);
    }
    return out;
  }

  fs::path dir_;
  FakeClock clock_;
  ServerConfig config_;
  std::unique_ptr<storage::Store> store_;
  audit::MemorySink sink_;
  Context ctx_;
  std::unique_ptr<PkiService> pki_;
  std::unique_ptr<RecordingService> service_;
  Gateway gw_, other_;
};

TEST_F(RecordingsTest, VerifiedUploadIsStoredOnceAndRetriesAreIdempotent) {
  const std::string bytes = Record(gw_, kStream, "read coils");
  auto r = Put(&gw_, kStream, bytes);
  ASSERT_EQ(r.status, 201) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["status"], "verified");
  EXPECT_EQ(j["user"], "tech");
  EXPECT_EQ(j["device"], "gw-1");
  EXPECT_EQ(j["target"], "plc1");
  EXPECT_EQ(j["protocol"], "raw");
  const fs::path file = dir_ / "recordings" / (kStream + ".rec");
  EXPECT_EQ(Slurp(file), bytes);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto stored = Events("recording.stored");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].actor, gw_.id);
  EXPECT_EQ(stored[0].target, kStream);
  EXPECT_EQ(stored[0].result, audit::Result::kSuccess);

  auto again = Put(&gw_, kStream, bytes);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Events("recording.stored").size(), 1u);

  // Different bytes for the same stream: refused, audited, the stored evidence untouched.
  auto conflict = Put(&gw_, kStream, Record(gw_, kStream, "write register"));
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  ASSERT_EQ(Events("recording.conflict").size(), 1u);
  EXPECT_EQ(Slurp(file), bytes);
  auto list = store_->recordings().List("", 10);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 1u);
}

TEST_F(RecordingsTest, TamperedUploadIsStoredFlaggedAndAudited) {
  std::string bytes = Record(gw_, kStream, std::string(3000, 'x'));
  // A byte in chunk 1's payload: after the fixed header (12), the meta and the chunk header (17).
  const size_t meta_len = (size_t{static_cast<uint8_t>(bytes[8])} << 24) |
                          (size_t{static_cast<uint8_t>(bytes[9])} << 16) |
                          (size_t{static_cast<uint8_t>(bytes[10])} << 8) |
                          size_t{static_cast<uint8_t>(bytes[11])};
  bytes[12 + meta_len + 17 + 2] ^= 0x01;
  auto r = Put(&gw_, kStream, bytes);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["status"], "tampered_on_upload");
  EXPECT_EQ(Slurp(dir_ / "recordings" / (kStream + ".rec")), bytes);  // evidence kept
  auto rec = store_->recordings().Get(kStream);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, "tampered_on_upload");
  EXPECT_FALSE(rec->problem.empty());
  auto stored = Events("recording.stored");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].result, audit::Result::kFailure);
  EXPECT_NE(stored[0].reason.find("tampered"), std::string::npos);
}

TEST_F(RecordingsTest, ARecordingOfAnotherStreamIsFlagged) {
  OpenSession("st-00000000000000b2", gw_.id);
  auto r = Put(&gw_, "st-00000000000000b2", Record(gw_, kStream, "x"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["status"], "tampered_on_upload");
}

TEST_F(RecordingsTest, OnlyTheGatewayOfAKnownSessionMayUpload) {
  const std::string bytes = Record(gw_, kStream, "x");
  EXPECT_EQ(Put(nullptr, kStream, bytes).status, 401);
  EXPECT_EQ(Put(&other_, kStream, bytes).status, 403);             // another gateway's stream
  EXPECT_EQ(Put(&gw_, "st-00000000000000ff", bytes).status, 404);  // no such session
  EXPECT_EQ(Put(&gw_, "../../etc/passwd", bytes).status, 400);
  EXPECT_EQ(Put(&gw_, kStream, std::string((1 << 20) + 1, 'x')).status, 413);
  EXPECT_EQ(Events("recording.upload_refused").size(), 5u);
  // A revoked device is refused even with an unexpired certificate.
  auto d = store_->devices().GetById(gw_.id);
  ASSERT_TRUE(d);
  ASSERT_TRUE(pki_->RevokeDevice(*d, 1));
  EXPECT_EQ(Put(&gw_, kStream, bytes).status, 403);
  EXPECT_FALSE(store_->recordings().Get(kStream));
  EXPECT_FALSE(fs::exists(dir_ / "recordings" / (kStream + ".rec")));
}

TEST_F(RecordingsTest, LargeBodiesOnlyForUploadsWithACertificate) {
  http::Request head;
  head.method = "PUT";
  head.target = "/api/v1/recordings/" + kStream;
  EXPECT_EQ(service_->BodyLimitFor(head, 1000), 1000u);  // no client certificate
  head.client_cert_der = gw_.der;
  EXPECT_EQ(service_->BodyLimitFor(head, 1000), size_t{1} << 20);
  head.method = "POST";
  EXPECT_EQ(service_->BodyLimitFor(head, 1000), 1000u);
  head.method = "PUT";
  head.target = "/api/v1/users";
  EXPECT_EQ(service_->BodyLimitFor(head, 1000), 1000u);
}

}  // namespace
}  // namespace torwart::server
