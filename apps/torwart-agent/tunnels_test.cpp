// TunnelManager without a network: the control-channel commands answer with the decision order's
// codes, quarantine is persisted, and every decision becomes an event that survives a control
// channel that is down — and an agent restart — in the outbox.
#include "tunnels.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "torwart/core/clock.hpp"
#include "torwart/core/ids.hpp"

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Events {
  std::mutex mu;
  bool up = false;
  std::vector<json> got;
};

class TunnelManagerTest : public ::testing::Test {
 protected:
  TunnelManagerTest() {
    dir_ = fs::temp_directory_path() / ("tunnels-" + RandomToken(6));
    fs::create_directories(dir_);
  }
  ~TunnelManagerTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<TunnelManager> Make() {
    TunnelSettings s;
    s.state_dir = dir_.string();
    s.device_id = NewUuid();
    s.key = [] { return Expected<pki::EvpPkeyPtr>(MakeError(Errc::kNotFound, "no key here")); };
    s.publish_event = [ev = events_](const std::string& p) -> Expected<void> {
      std::lock_guard lock(ev->mu);
      if (!ev->up) return MakeError(Errc::kUnavailable, "control channel down");
      ev->got.push_back(json::parse(p));
      return {};
    };
    s.upload_recordings = false;
    auto m = TunnelManager::Create(std::move(s));
    EXPECT_TRUE(m) << m.error().message();
    return std::move(*m);
  }
  json Open(TunnelManager& m, const std::string& target = "plc") {
    json args{{"stream", "st-" + HexEncode(RandomBytes(8))},
              {"relay", "127.0.0.1:9"},
              {"grant", "ar-0a1b2c3d4e5f"},
              {"user", "anna"},
              {"site", "werk"},
              {"target", target},
              {"deadline", ToUnix(SystemClock::Instance().Now()) + 600}};
    auto r = m.HandleCommand("stream.open", args);
    EXPECT_TRUE(r.has_value());
    return *r;
  }
  std::vector<json> WaitForEvents(size_t n) {
    for (int i = 0; i < 100; ++i) {
      {
        std::lock_guard lock(events_->mu);
        if (events_->got.size() >= n) return events_->got;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::lock_guard lock(events_->mu);
    return events_->got;
  }
  fs::path dir_;
  std::shared_ptr<Events> events_ = std::make_shared<Events>();
};

TEST_F(TunnelManagerTest, CommandsAnswerWithTheDecisionCodes) {
  auto m = Make();
  EXPECT_FALSE(m->HandleCommand("ping", json::object()).has_value()) << "not a tunnel command";
  // No site.toml: nothing is allowed.
  json r = Open(*m);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "not_allowed");
  EXPECT_EQ(r["error"], "target plc is not on this gateway's allowlist");
  std::ofstream(dir_ / "site.toml") << "[[target]]\nname = \"plc\"\naddress = \"127.0.0.1:1\"\n"
                                       "consent = true\n";
  r = Open(*m);
  EXPECT_EQ(r["code"], "consent") << r.dump();
  // Quarantine beats everything and is persisted.
  auto q = m->HandleCommand("quarantine", {{"on", true}, {"reason", "CVE-1"}});
  ASSERT_TRUE(q);
  EXPECT_EQ((*q)["ok"], true);
  EXPECT_EQ((*q)["result"]["killed"], 0);
  EXPECT_TRUE(fs::exists(dir_ / "quarantine.json"));
  r = Open(*m, "not-listed");
  EXPECT_EQ(r["code"], "quarantined");
  EXPECT_EQ(m->Status()["quarantine"]["on"], true);
  // Malformed commands.
  EXPECT_EQ((*m->HandleCommand("quarantine", {{"on", "yes"}}))["code"], "bad_request");
  EXPECT_EQ((*m->HandleCommand("stream.kill", json::object()))["code"], "bad_request");
  EXPECT_EQ((*m->HandleCommand("stream.kill", {{"stream", "st-1"}}))["code"], "bad_request");
  EXPECT_EQ((*m->HandleCommand("stream.open", {{"stream", 1}}))["code"], "bad_request");
  auto k = m->HandleCommand("stream.kill", {{"all", true}, {"reason", "test"}});
  EXPECT_EQ((*k)["result"]["killed"], 0);
  EXPECT_EQ((*m->HandleCommand("quarantine", {{"on", false}}))["ok"], true);
  r = Open(*m);
  EXPECT_EQ(r["code"], "consent") << "released: back to the normal order";
  m->Stop();
}

// Events while the control channel is down go to <state-dir>/events.outbox, in order, and are
// delivered after a restart once it is up.
TEST_F(TunnelManagerTest, EventsSurviveADownControlChannelAndARestart) {
  {
    auto m = Make();
    Open(*m);                                                         // tunnel.stream_refused
    m->HandleCommand("quarantine", {{"on", true}, {"reason", "r"}});  // quarantine.changed
    Open(*m);  // tunnel.stream_refused (quarantined)
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // the worker tried
    EXPECT_EQ(m->Status()["events_queued"], 3);
    m->Stop();
  }
  ASSERT_TRUE(fs::exists(dir_ / "events.outbox"));
  {
    std::lock_guard lock(events_->mu);
    EXPECT_TRUE(events_->got.empty());
    events_->up = true;
  }
  auto m = Make();
  m->OnControlConnected();
  auto got = WaitForEvents(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["type"], "tunnel.stream_refused");
  EXPECT_EQ(got[0]["detail"]["code"], "not_allowed");
  EXPECT_EQ(got[0]["grant"], "ar-0a1b2c3d4e5f");
  EXPECT_EQ(got[0]["user"], "anna");
  EXPECT_EQ(got[0]["v"], 1);
  EXPECT_TRUE(got[0]["ts"].is_number_integer());
  EXPECT_EQ(got[1]["type"], "quarantine.changed");
  EXPECT_EQ(got[1]["detail"]["on"], true);
  EXPECT_FALSE(got[1].contains("stream"));
  EXPECT_EQ(got[2]["detail"]["code"], "quarantined");
  for (int i = 0; i < 40 && fs::exists(dir_ / "events.outbox"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(fs::exists(dir_ / "events.outbox")) << "delivered events leave the outbox";
  EXPECT_EQ(m->Status()["events_queued"], 0);
  m->Stop();
}

TEST_F(TunnelManagerTest, ConsentSwitchIsAuditedAndStatusShowsIt) {
  auto m = Make();
  {
    std::lock_guard lock(events_->mu);
    events_->up = true;
  }
  int64_t until = ToUnix(SystemClock::Instance().Now()) + 3600;
  auto on = m->SetConsent(until);
  ASSERT_TRUE(on);
  EXPECT_EQ((*on)["on"], true);
  EXPECT_EQ((*on)["until"], until);
  EXPECT_TRUE(fs::exists(dir_ / "consent.json"));
  EXPECT_EQ(m->Status()["consent"]["on"], true);
  auto off = m->SetConsent(std::nullopt);
  ASSERT_TRUE(off);
  EXPECT_EQ((*off)["on"], false);
  EXPECT_EQ((*off)["killed"], 0);
  auto got = WaitForEvents(2);
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got[0]["type"], "consent.changed");
  EXPECT_EQ(got[0]["detail"]["on"], true);
  EXPECT_EQ(got[0]["detail"]["until"], until);
  EXPECT_EQ(got[1]["detail"]["on"], false);
  m->Stop();
}

}  // namespace
}  // namespace torwart::agent
