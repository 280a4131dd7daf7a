#include "platform/sqlite/mfa_repo.hpp"

#include <string>

namespace torwart::storage::sqlite {
namespace {

class SqliteMfaRepo final : public MfaRepo {
 public:
  SqliteMfaRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) : mu_(mu), conn_(conn) {}

  Expected<void> PutPending(const MfaSecret& m) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "INSERT INTO user_mfa(user_id, sealed_secret, active, last_step, created_us, "
        "activated_us) VALUES(?1, ?2, 0, -1, ?3, NULL) ON CONFLICT(user_id) DO UPDATE SET "
        "sealed_secret = ?2, active = 0, last_step = -1, created_us = ?3, activated_us = NULL",
        "storing TOTP secret");
    if (!st) return MakeError(st.error());
    st->Bind(1, m.user_id).Bind(2, m.sealed_secret).BindTime(3, m.created);
    return st->Run();
  }

  Expected<MfaSecret> Get(const std::string& user_id) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare(
        "SELECT user_id, sealed_secret, active, last_step, created_us, activated_us "
        "FROM user_mfa WHERE user_id = ?",
        "reading TOTP secret");
    if (!st) return MakeError(st.error());
    st->Bind(1, user_id);
    auto row = st->Step();
    if (!row) return MakeError(row.error());
    if (!*row) return MakeError(Errc::kNotFound, "no second factor enrolled");
    MfaSecret m;
    m.user_id = st->Text(0);
    m.sealed_secret = st->Text(1);
    m.active = st->Int(2) != 0;
    m.last_step = st->Int(3);
    m.created = st->Time(4);
    m.activated = st->OptionalTime(5);
    return m;
  }

  Expected<void> ConsumeStep(const std::string& user_id, int64_t step, bool activate,
                             TimePoint when) override {
    std::lock_guard lock(mu_);
    // One statement: the comparison and the update cannot be separated by another caller.
    auto st = conn_->Prepare(
        "UPDATE user_mfa SET last_step = ?2, active = CASE WHEN ?3 THEN 1 ELSE active END, "
        "activated_us = CASE WHEN ?3 AND active = 0 THEN ?4 ELSE activated_us END "
        "WHERE user_id = ?1 AND last_step < ?2",
        "consuming TOTP step");
    if (!st) return MakeError(st.error());
    st->Bind(1, user_id).Bind(2, step).Bind(3, int64_t{activate}).BindTime(4, when);
    if (auto r = st->Run(); !r) return r;
    if (conn_->Changes() == 0) {
      return MakeError(Errc::kFailedPrecondition, "this code was already used");
    }
    return {};
  }

  Expected<void> Delete(const std::string& user_id) override {
    std::lock_guard lock(mu_);
    auto st = conn_->Prepare("DELETE FROM user_mfa WHERE user_id = ?", "deleting TOTP secret");
    if (!st) return MakeError(st.error());
    st->Bind(1, user_id);
    return st->Run();
  }

 private:
  std::mutex& mu_;
  std::unique_ptr<Connection>& conn_;
};

}  // namespace

std::unique_ptr<MfaRepo> MakeMfaRepo(std::mutex& mu, std::unique_ptr<Connection>& conn) {
  return std::make_unique<SqliteMfaRepo>(mu, conn);
}

}  // namespace torwart::storage::sqlite
