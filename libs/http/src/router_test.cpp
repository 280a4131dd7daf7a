#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "torwart/http/server.hpp"
#include "uri.hpp"

namespace torwart::http {
namespace {

using ::testing::HasSubstr;

Handler Named(std::string name) {
  return [name](const Request& r) {
    std::string body = name;
    for (const auto& [k, v] : r.params) body += " " + k + "=" + v;
    return Response::Json(200, body);
  };
}

Request Make(std::string method, std::string target) {
  Request r;
  r.method = std::move(method);
  r.target = std::move(target);
  return r;
}

TEST(RouterTest, MatchesSegmentsAndParams) {
  Router router;
  router.Add("GET", "/api/v1/devices", Named("list"));
  router.Add("GET", "/api/v1/devices/{name}", Named("get"));
  router.Add("POST", "/api/v1/devices/{name}/revoke", Named("revoke"));
  router.Add("GET", "/api/v1/sites/{site}/targets/{target}", Named("target"));
  router.Add("GET", "/", Named("root"));

  auto req = Make("GET", "/api/v1/devices");
  EXPECT_EQ(router.Dispatch(req).body, "list");
  req = Make("GET", "/api/v1/devices/plc-7");
  EXPECT_EQ(router.Dispatch(req).body, "get name=plc-7");
  EXPECT_EQ(req.params.at("name"), "plc-7");
  req = Make("POST", "/api/v1/devices/plc-7/revoke");
  EXPECT_EQ(router.Dispatch(req).body, "revoke name=plc-7");
  req = Make("GET", "/api/v1/sites/berlin/targets/hmi?x=1");
  EXPECT_EQ(router.Dispatch(req).body, "target site=berlin target=hmi");
  req = Make("GET", "/");
  EXPECT_EQ(router.Dispatch(req).body, "root");
}

TEST(RouterTest, PercentDecodesParamsPerSegment) {
  Router router;
  router.Add("GET", "/devices/{name}", Named("get"));
  auto req = Make("GET", "/devices/line%201%2Fplc");
  auto resp = router.Dispatch(req);
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(req.params.at("name"), "line 1/plc");  // an encoded '/' stays in its segment
  req = Make("GET", "/devices/bad%zz");
  EXPECT_EQ(router.Dispatch(req).status, 400);
  req = Make("GET", "/devices/nul%00");
  EXPECT_EQ(router.Dispatch(req).status, 400);
}

TEST(RouterTest, LiteralBeatsParamRegardlessOfOrder) {
  Router router;
  router.Add("GET", "/devices/{name}", Named("get"));
  router.Add("GET", "/devices/search", Named("search"));
  auto req = Make("GET", "/devices/search");
  EXPECT_EQ(router.Dispatch(req).body, "search");
  req = Make("GET", "/devices/other");
  EXPECT_EQ(router.Dispatch(req).body, "get name=other");
}

TEST(RouterTest, NotFoundVersusMethodNotAllowed) {
  Router router;
  router.Add("GET", "/devices/{name}", Named("get"));
  router.Add("DELETE", "/devices/{name}", Named("delete"));

  auto req = Make("GET", "/nothing/here");
  auto resp = router.Dispatch(req);
  EXPECT_EQ(resp.status, 404);
  EXPECT_THAT(resp.body, HasSubstr("\"code\":\"not_found\""));

  req = Make("GET", "/devices/a/b");  // more segments than any route
  EXPECT_EQ(router.Dispatch(req).status, 404);
  req = Make("GET", "/devices/a/");  // trailing slash is another path
  EXPECT_EQ(router.Dispatch(req).status, 404);

  req = Make("PUT", "/devices/x");
  resp = router.Dispatch(req);
  EXPECT_EQ(resp.status, 405);
  EXPECT_EQ(resp.headers.at("Allow"), "DELETE, GET");
  EXPECT_THAT(resp.body, HasSubstr("method_not_allowed"));
}

TEST(RouterTest, UsesDecodedPathWhenNoTarget) {
  Router router;
  router.Add("GET", "/a/{x}", Named("a"));
  Request req;
  req.method = "GET";
  req.path = "/a/b c";
  EXPECT_EQ(router.Dispatch(req).body, "a x=b c");
}

TEST(UriTest, QueryParsing) {
  auto q = internal::ParseQuery("a=1&b=x%20y+z&c&a=2&&d=%3D");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->at("a"), "1");  // first wins
  EXPECT_EQ(q->at("b"), "x y z");
  EXPECT_EQ(q->at("c"), "");
  EXPECT_EQ(q->at("d"), "=");
  EXPECT_EQ(q->size(), 4u);
  EXPECT_FALSE(internal::ParseQuery("a=%4"));
  EXPECT_FALSE(internal::ParseQuery("a=%"));
  auto split = internal::SplitOriginForm("/x/%41b?q=1#frag");
  ASSERT_TRUE(split);
  EXPECT_EQ(split->path, "/x/Ab");
  EXPECT_EQ(split->raw_query, "q=1");
  EXPECT_FALSE(internal::SplitOriginForm("http://example.com/x"));
  EXPECT_FALSE(internal::SplitOriginForm("*"));
}

TEST(ResponseTest, ErrorIsJsonAndEscaped) {
  auto r = Response::Error(409, "conflict", "name \"x\" taken\n");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"code":"conflict","message":"name \"x\" taken\n"}})");
  auto bad_utf8 = Response::Error(400, "bad", std::string("\xff\xfe"));
  EXPECT_EQ(bad_utf8.status, 400);
  EXPECT_THAT(bad_utf8.body, HasSubstr("\"code\":\"bad\""));
}

}  // namespace
}  // namespace torwart::http
