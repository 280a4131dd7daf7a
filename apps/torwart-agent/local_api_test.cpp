#include "local_api.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "inventory.hpp"
#include "profiles.hpp"

namespace torwart::agent {
namespace {

using nlohmann::json;

TEST(LocalApiParse, AcceptsWellFormedRequests) {
  auto r = ParseRequest(R"({"v":1,"op":"status"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->op, "status");
  r = ParseRequest(R"({"v":1,"op":"profile.use","args":{"name":"site-b"},"id":7})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->args["name"], "site-b");
  EXPECT_EQ(r->id, 7);
  r = ParseRequest(R"({"v":1,"op":"pin","args":{"pin":"1234"}})");
  ASSERT_TRUE(r);
}

TEST(LocalApiParse, RejectsEverythingElse) {
  for (const char* bad :
       {"", "{", "[]", "null", R"({"op":"status"})", R"({"v":2,"op":"status"})",
        R"({"v":1,"op":"reboot"})", R"({"v":1,"op":"status","x":1})",
        R"({"v":1,"op":"status","args":[]})", R"({"v":1,"op":"status","args":{"a":1}})",
        R"({"v":1,"op":"profile.use"})", R"({"v":1,"op":"profile.use","args":{"name":"../x"}})",
        R"({"v":1,"op":"profile.use","args":{"name":""}})",
        R"({"v":1,"op":"pin","args":{"pin":""}})", R"({"v":1,"op":"pin","args":{"pin":5}})",
        R"({"v":1,"op":"status","id":{}})", R"({"v":"1","op":"status"})"}) {
    EXPECT_FALSE(ParseRequest(bad)) << bad;
  }
  EXPECT_FALSE(ParseRequest(std::string(kMaxRequestBytes + 1, ' ')));
}

TEST(LocalApiServer, ServesRequestsOnARestrictedSocket) {
  auto dir = std::filesystem::temp_directory_path() / ("tw-api-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "agent.sock").string();
  int calls = 0;
  auto server = LocalApiServer::Start(path, [&](const Request& r) -> Expected<json> {
    ++calls;
    if (r.op == "disconnect") return MakeError(Errc::kFailedPrecondition, "not now");
    return json{{"op", r.op}};
  });
  ASSERT_TRUE(server) << server.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  auto r = CallLocalApi(path, "status");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["op"], "status");
  auto e = CallLocalApi(path, "disconnect");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().message(), "not now");
  // A second server on the same live socket is refused (one agent per state dir).
  EXPECT_FALSE(
      LocalApiServer::Start(path, [](const Request&) -> Expected<json> { return json{}; }));
  server->reset();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(calls, 2);
  auto gone = CallLocalApi(path, "status");
  ASSERT_FALSE(gone);
  EXPECT_TRUE(gone.error().Is(Errc::kUnavailable));
  std::filesystem::remove_all(dir);
}

TEST(Inventory, ScriptsGiveKeyValueAttributes) {
  auto dir = std::filesystem::temp_directory_path() / ("tw-inv-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const char* text, bool exec) {
    auto p = dir / name;
    FILE* f = fopen(p.c_str(), "w");
    fputs(text, f);
    fclose(f);
    chmod(p.c_str(), exec ? 0755 : 0644);
  };
  write("inventory-plc", "#!/bin/sh\necho plc_model=S7-1500\necho plc_model=S7-1200\necho junk\n",
        true);
  write("inventory-fail", "#!/bin/sh\nexit 3\n", true);
  write("notes.txt", "plc=x\n", false);
  json a = RunInventoryScripts(dir.string());
  ASSERT_TRUE(a.contains("plc_model"));
  EXPECT_EQ(a["plc_model"], json::array({"S7-1500", "S7-1200"}));
  EXPECT_FALSE(a.contains("plc"));
  ASSERT_TRUE(a.contains("_errors"));
  EXPECT_EQ(a["_errors"].size(), 2u);  // the failing script and the junk line
  json inv = CollectInventory(dir.string());
  EXPECT_FALSE(inv["hostname"].get<std::string>().empty());
  EXPECT_TRUE(inv["interfaces"].is_array());
  HealthSampler hs;
  json h = hs.Sample("/");
  EXPECT_GT(h["mem"]["total"].get<uint64_t>(), 0u);
  EXPECT_GT(h["disk"]["total"].get<uint64_t>(), 0u);
  EXPECT_TRUE(h["cpu"].is_number());
  EXPECT_TRUE(h["ts"].is_number_integer());
  std::filesystem::remove_all(dir);
}

TEST(Profiles, DefaultLivesInTheStateDir) {
  EXPECT_EQ(ProfileDir("/s", "default"), "/s");
  EXPECT_EQ(ProfileDir("/s", "b"), "/s/profiles/b");
  EXPECT_FALSE(ValidProfileName("../b"));
  auto dir = std::filesystem::temp_directory_path() / ("tw-prof-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "profiles" / "b");
  EXPECT_EQ(ActiveProfile(dir.string()), "default");
  EXPECT_FALSE(SetActiveProfile(dir.string(), "b"));  // not enrolled
  FILE* f = fopen((dir / "profiles" / "b" / "agent.json").c_str(), "w");
  fputs(R"({"server":"https://b","device_id":"u"})", f);
  fclose(f);
  ASSERT_TRUE(SetActiveProfile(dir.string(), "b"));
  EXPECT_EQ(ActiveProfile(dir.string()), "b");
  json l = ListProfiles(dir.string());
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["server"], "https://b");
  EXPECT_TRUE(l[0]["active"].get<bool>());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torwart::agent
