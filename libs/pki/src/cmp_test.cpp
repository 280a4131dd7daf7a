#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/cmp_client.hpp"
#include "torwart/pki/cmp_der.hpp"
#include "torwart/pki/cmp_server.hpp"

namespace torwart::pki {
namespace {
namespace fs = std::filesystem;

class FakeBackend : public CmpBackend {
 public:
  struct Ref {
    EnrollmentSecret secret;
    bool used = false;
  };
  Expected<EnrollmentSecret> LookupReference(const std::string& reference) override {
    std::lock_guard lock(mu);
    auto it = refs.find(reference);
    if (it == refs.end() || it->second.used)
      return MakeError(Errc::kNotFound, "unknown or used reference");
    return it->second.secret;
  }
  Expected<void> ConsumeReference(const std::string& reference,
                                  const std::string& fingerprint) override {
    std::lock_guard lock(mu);
    auto it = refs.find(reference);
    if (it == refs.end() || it->second.used)
      return MakeError(Errc::kFailedPrecondition, "reference already used");
    it->second.used = true;
    fingerprints[it->second.secret.device_id] = fingerprint;
    return {};
  }
  Expected<void> AuthorizeRenewal(const DeviceIdentity& current,
                                  const std::string& fingerprint) override {
    std::lock_guard lock(mu);
    if (revoked.count(current.serial)) return MakeError(Errc::kRevoked, "certificate revoked");
    if (fingerprints[current.uuid] != fingerprint)
      return MakeError(Errc::kPermissionDenied, "fingerprint mismatch");
    return {};
  }
  Expected<void> RecordIssued(const std::string& device_id, X509* cert,
                              const std::string&) override {
    std::lock_guard lock(mu);
    owner[SerialHex(cert)] = device_id;
    return {};
  }
  Expected<void> Revoke(const DeviceIdentity& requester, const std::string& serial,
                        int reason) override {
    std::lock_guard lock(mu);
    if (owner[serial] != requester.uuid)
      return MakeError(Errc::kPermissionDenied, "not your certificate");
    revoked.insert(serial);
    last_reason = reason;
    return {};
  }
  std::chrono::seconds DeviceLifetime() override { return std::chrono::hours(1); }

  std::mutex mu;
  std::map<std::string, Ref> refs;
  std::map<std::string, std::string> fingerprints, owner;
  std::set<std::string> revoked;
  int last_reason = -1;
};

class CmpTest : public ::testing::Test {
 protected:
  CmpTest()
      : dir_(fs::temp_directory_path() / ("cmp_test_" + RandomToken(8))),
        clock_(std::chrono::system_clock::now()) {
    auto ca = CertificateAuthority::OpenOrCreate(CaSettings{.dir = dir_}, clock_);
    EXPECT_TRUE(ca) << ca.error().String();
    ca_ = std::move(*ca);
    server_ = std::make_unique<CmpServer>(*ca_, backend_, clock_);
    device_id_ = NewUuid();
    backend_.refs["ref-1"] = {{device_id_, "s3cret-one-time"}, false};
    transfer_ = [this](const std::string& req) -> Expected<std::string> {
      requests_.push_back(req);
      auto r = server_->Handle(req, "test");
      outcomes_.push_back(r.outcome);
      if (r.http_status != 200) return MakeError(Errc::kUnavailable, "HTTP " + r.outcome.error);
      return r.der;
    };
  }
  ~CmpTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Expected<Enrolled> Enroll(EVP_PKEY* key, const std::string& secret = "s3cret-one-time") {
    return InitialEnroll(transfer_, ca_->ChainPem(), "ref-1", secret, key, "machine-42");
  }

  fs::path dir_;
  FakeClock clock_;
  std::unique_ptr<CertificateAuthority> ca_;
  FakeBackend backend_;
  std::unique_ptr<CmpServer> server_;
  std::string device_id_;
  CmpTransfer transfer_;
  std::vector<std::string> requests_;
  std::vector<CmpOutcome> outcomes_;
};

TEST_F(CmpTest, InitialEnrollmentIssuesDeviceCertificateOnce) {
  auto key = GenerateP256Key();
  auto enrolled = Enroll(key->get());
  ASSERT_TRUE(enrolled) << enrolled.error().String();
  EXPECT_EQ(SubjectCn(enrolled->cert.get()), device_id_);
  EXPECT_EQ(*MachineFingerprintOf(enrolled->cert.get()), "machine-42");
  EXPECT_EQ(X509_check_private_key(enrolled->cert.get(), key->get()), 1);
  ASSERT_FALSE(enrolled->chain.empty());
  EXPECT_EQ(X509_cmp(enrolled->chain[0].get(), ca_->issuing()), 0);
  auto id = ca_->VerifyDeviceCertificate(enrolled->cert.get());
  ASSERT_TRUE(id) << id.error().String();
  EXPECT_EQ(backend_.fingerprints[device_id_], "machine-42");
  ASSERT_EQ(outcomes_.size(), 2u);  // ir + certConf
  EXPECT_EQ(outcomes_[0].kind, "ir");
  EXPECT_TRUE(outcomes_[0].accepted);
  EXPECT_EQ(outcomes_[0].reference, "ref-1");
  EXPECT_EQ(outcomes_[0].serial, SerialHex(enrolled->cert.get()));
  EXPECT_EQ(outcomes_[1].kind, "certConf");
  EXPECT_TRUE(outcomes_[1].accepted);

  // The secret is single-use.
  auto again = Enroll(GenerateP256Key()->get());
  ASSERT_FALSE(again);
  EXPECT_EQ(outcomes_.back().kind, "ir");
  EXPECT_FALSE(outcomes_.back().accepted);
  EXPECT_NE(outcomes_.back().error.find("reference"), std::string::npos) << outcomes_.back().error;
}

TEST_F(CmpTest, WrongSecretIsRefusedAndDoesNotBurnTheReference) {
  auto key = GenerateP256Key();
  auto bad = Enroll(key->get(), "wrong-secret");
  ASSERT_FALSE(bad);
  ASSERT_FALSE(outcomes_.empty());
  EXPECT_FALSE(outcomes_.back().accepted);
  EXPECT_NE(outcomes_.back().error.find("protection"), std::string::npos)
      << outcomes_.back().error;
  EXPECT_FALSE(backend_.refs["ref-1"].used);
  EXPECT_TRUE(Enroll(key->get()));
}

TEST_F(CmpTest, ReplayedRequestIsRefused) {
  auto key = GenerateP256Key();
  ASSERT_TRUE(Enroll(key->get()));
  backend_.refs["ref-1"].used = false;  // even if the secret were still valid
  auto replay = server_->Handle(requests_.front(), "attacker");
  EXPECT_EQ(replay.http_status, 200);
  EXPECT_FALSE(replay.der.empty());
  EXPECT_FALSE(replay.outcome.accepted);
  EXPECT_NE(replay.outcome.error.find("replayed"), std::string::npos) << replay.outcome.error;
}

TEST_F(CmpTest, RenewAndRevoke) {
  auto key = GenerateP256Key();
  auto first = Enroll(key->get());
  ASSERT_TRUE(first) << first.error().String();
  clock_.Advance(std::chrono::seconds(5));

  auto renewed = Renew(transfer_, ca_->ChainPem(), first->cert.get(), key->get(), "machine-42");
  ASSERT_TRUE(renewed) << renewed.error().String();
  EXPECT_EQ(SubjectCn(renewed->cert.get()), device_id_);
  EXPECT_NE(SerialHex(renewed->cert.get()), SerialHex(first->cert.get()));
  EXPECT_EQ(outcomes_[outcomes_.size() - 2].kind, "kur");
  EXPECT_TRUE(outcomes_[outcomes_.size() - 2].accepted);

  // Wrong fingerprint: refused by the backend.
  auto mismatch = Renew(transfer_, ca_->ChainPem(), renewed->cert.get(), key->get(), "other");
  EXPECT_FALSE(mismatch);

  // The device revokes its old certificate, signed with the new one.
  auto rr = RevokeOwn(transfer_, ca_->ChainPem(), renewed->cert.get(), key->get(),
                      first->cert.get(), kReasonSuperseded);
  ASSERT_TRUE(rr) << rr.error().String();
  EXPECT_EQ(outcomes_.back().kind, "rr");
  EXPECT_TRUE(backend_.revoked.count(SerialHex(first->cert.get())));
  EXPECT_EQ(backend_.last_reason, kReasonSuperseded);

  // A revoked certificate cannot renew.
  auto after = Renew(transfer_, ca_->ChainPem(), first->cert.get(), key->get(), "machine-42");
  EXPECT_FALSE(after);
}

TEST_F(CmpTest, ForeignCertificateCannotRenew) {
  fs::path other_dir = dir_ / "other";
  auto other = CertificateAuthority::OpenOrCreate(CaSettings{.dir = other_dir}, clock_);
  ASSERT_TRUE(other);
  auto key = GenerateP256Key();
  auto foreign = (*other)->IssueDeviceCertificate(key->get(), NewUuid(), {}, "");
  ASSERT_TRUE(foreign);
  auto r = Renew(transfer_, ca_->ChainPem(), foreign->get(), key->get(), "");
  EXPECT_FALSE(r);
  EXPECT_FALSE(outcomes_.back().accepted);
}

TEST_F(CmpTest, GarbageAndTruncatedInputGive400) {
  auto key = GenerateP256Key();
  ASSERT_TRUE(Enroll(key->get()));
  const std::string good = requests_.front();
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{10}, good.size() / 2, good.size() - 1}) {
    auto r = server_->Handle(good.substr(0, n), "fuzz");
    EXPECT_EQ(r.http_status, 400) << n;
    EXPECT_FALSE(r.outcome.accepted);
  }
  EXPECT_EQ(server_->Handle(std::string(70000, '\x30'), "big").http_status, 400);
  EXPECT_EQ(server_->Handle("hello world", "text").http_status, 400);
  EXPECT_EQ(server_->Handle(good + "x", "trailing").http_status, 400);
  // Flip every byte of the header region: never crashes, never accepted.
  for (size_t i = 0; i < std::min<size_t>(good.size(), 200); ++i) {
    std::string mutated = good;
    mutated[i] = static_cast<char>(mutated[i] ^ 0x5a);
    auto r = server_->Handle(mutated, "fuzz");
    EXPECT_FALSE(r.outcome.accepted) << i;
  }
}

TEST_F(CmpTest, DerWalkExtractsHeaderFields) {
  auto key = GenerateP256Key();
  ASSERT_TRUE(Enroll(key->get()));
  auto f = ParseCmpMessageFields(requests_.front());
  ASSERT_TRUE(f) << f.error().String();
  EXPECT_EQ(f->body_type, kCmpIr);
  ASSERT_TRUE(f->sender_kid);
  EXPECT_EQ(*f->sender_kid, "ref-1");
  EXPECT_TRUE(f->transaction_id && f->sender_nonce && f->message_time);
  EXPECT_EQ(*f->protection_alg_oid, kPbmOidContent);
  EXPECT_FALSE(ParseCmpMessageFields("\x30\x84\xff\xff\xff\xff"));
  EXPECT_FALSE(ParseCmpMessageFields("\x30\x80\x00\x00"));  // indefinite length
}

TEST_F(CmpTest, StaleMessageTimeIsRefused) {
  auto key = GenerateP256Key();
  clock_.Advance(std::chrono::minutes(10));  // server clock ahead of the client's
  auto r = Enroll(key->get());
  EXPECT_FALSE(r);
  EXPECT_NE(outcomes_.back().error.find("messageTime"), std::string::npos)
      << outcomes_.back().error;
}

}  // namespace
}  // namespace torwart::pki
