// The local API's tunnel ops (sessions.list, sessions.kill, consent.set, consent.changed): what
// the parser accepts and refuses (docs/design/agent-local-api.md).
#include <gtest/gtest.h>

#include "local_api.hpp"

namespace torwart::agent {
namespace {

TEST(LocalApiTunnelOps, AcceptsTheDocumentedForms) {
  for (const char* ok :
       {R"({"v":1,"op":"sessions.list"})",
        R"({"v":1,"op":"sessions.kill","args":{"id":"st-0123456789abcdef"}})",
        R"({"v":1,"op":"sessions.kill","args":{"all":true},"id":"k"})",
        R"({"v":1,"op":"consent.set","args":{"on":true,"until":1900000000}})",
        R"({"v":1,"op":"consent.set","args":{"on":false}})", R"({"v":1,"op":"consent.changed"})"}) {
    auto r = ParseRequest(ok);
    EXPECT_TRUE(r) << ok << ": " << (r ? "" : r.error().message());
  }
}

TEST(LocalApiTunnelOps, RefusesEverythingElse) {
  for (const char* bad :
       {R"({"v":1,"op":"sessions.list","args":{"x":1}})", R"({"v":1,"op":"sessions.kill"})",
        R"({"v":1,"op":"sessions.kill","args":{"id":"st-0123456789abcdef","all":true}})",
        R"({"v":1,"op":"sessions.kill","args":{"all":false}})",
        R"({"v":1,"op":"sessions.kill","args":{"id":"st-0123"}})",
        R"({"v":1,"op":"sessions.kill","args":{"id":"st-0123456789ABCDEF"}})",
        R"({"v":1,"op":"sessions.kill","args":{"id":"../../etc/passwd00"}})",
        R"({"v":1,"op":"sessions.kill","args":{"id":5}})", R"({"v":1,"op":"consent.set"})",
        R"({"v":1,"op":"consent.set","args":{"on":true}})",
        R"({"v":1,"op":"consent.set","args":{"on":false,"until":5}})",
        R"({"v":1,"op":"consent.set","args":{"on":true,"until":"soon"}})",
        R"({"v":1,"op":"consent.set","args":{"on":true,"until":-1}})",
        R"({"v":1,"op":"consent.set","args":{"on":"yes"}})",
        R"({"v":1,"op":"consent.changed","args":{"on":true}})"}) {
    EXPECT_FALSE(ParseRequest(bad)) << bad;
  }
}

}  // namespace
}  // namespace torwart::agent
