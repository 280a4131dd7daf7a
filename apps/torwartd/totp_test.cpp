#include "totp.hpp"

#include <gtest/gtest.h>

namespace torwart::server::totp {
namespace {

const std::string kSeed20 = "12345678901234567890";
const std::string kSeed32 = "12345678901234567890123456789012";
const std::string kSeed64 = "1234567890123456789012345678901234567890123456789012345678901234";

TEST(Hotp, Rfc4226AppendixD) {
  const char* expected[] = {"755224", "287082", "359152", "969429", "338314",
                            "254676", "287922", "162583", "399871", "520489"};
  for (uint64_t i = 0; i < 10; ++i) {
    auto code = Hotp(kSeed20, i);
    ASSERT_TRUE(code) << code.error().String();
    EXPECT_EQ(*code, expected[i]) << "counter " << i;
  }
}

struct Vector {
  int64_t time;
  const char* code;
  Hash hash;
};

// RFC 6238 Appendix B: T0 = 0, X = 30, 8 digits, each hash with its own seed length.
const Vector kVectors[] = {
    {59, "94287082", Hash::kSha1},
    {59, "46119246", Hash::kSha256},
    {59, "90693936", Hash::kSha512},
    {1111111109, "07081804", Hash::kSha1},
    {1111111109, "68084774", Hash::kSha256},
    {1111111109, "25091201", Hash::kSha512},
    {1111111111, "14050471", Hash::kSha1},
    {1111111111, "67062674", Hash::kSha256},
    {1111111111, "99943326", Hash::kSha512},
    {1234567890, "89005924", Hash::kSha1},
    {1234567890, "91819424", Hash::kSha256},
    {1234567890, "93441116", Hash::kSha512},
    {2000000000, "69279037", Hash::kSha1},
    {2000000000, "90698825", Hash::kSha256},
    {2000000000, "38618901", Hash::kSha512},
    {20000000000, "65353130", Hash::kSha1},
    {20000000000, "77737706", Hash::kSha256},
    {20000000000, "47863826", Hash::kSha512},
};

const std::string& SeedFor(Hash h) {
  return h == Hash::kSha1 ? kSeed20 : h == Hash::kSha256 ? kSeed32 : kSeed64;
}

TEST(Totp, Rfc6238AppendixB) {
  for (const Vector& v : kVectors) {
    // 20000000000 s is past what a nanosecond system_clock can hold: use the step directly.
    uint64_t step = static_cast<uint64_t>(v.time / 30);
    auto code = Hotp(SeedFor(v.hash), step, 8, v.hash);
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, v.code) << "T=" << v.time;
    if (v.time < 10000000000) {
      Params p{.hash = v.hash, .digits = 8};
      auto at = CodeAt(SeedFor(v.hash), FromUnix(v.time), p);
      ASSERT_TRUE(at);
      EXPECT_EQ(*at, v.code) << "T=" << v.time;
      EXPECT_EQ(Verify(SeedFor(v.hash), v.code, FromUnix(v.time), -1, p),
                std::optional<int64_t>(v.time / 30));
    }
  }
}

TEST(Totp, SixDigitSha1CodeIsTheLowDigitsOfTheEightDigitOne) {
  auto code = CodeAt(kSeed20, FromUnix(1111111109));
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, "081804");
}

TEST(Totp, WindowAcceptsOneStepEitherSideOnly) {
  TimePoint now = FromUnix(1234567890);
  int64_t step = StepAt(now);
  for (int delta : {-1, 0, 1}) {
    auto code = Hotp(kSeed20, static_cast<uint64_t>(step + delta));
    ASSERT_TRUE(code);
    EXPECT_EQ(Verify(kSeed20, *code, now, -1), std::optional<int64_t>(step + delta)) << delta;
  }
  for (int delta : {-2, 2}) {
    auto code = Hotp(kSeed20, static_cast<uint64_t>(step + delta));
    ASSERT_TRUE(code);
    EXPECT_EQ(Verify(kSeed20, *code, now, -1), std::nullopt) << delta;
  }
}

TEST(Totp, AUsedStepOrAnEarlierOneIsRefused) {
  TimePoint now = FromUnix(1234567890);
  int64_t step = StepAt(now);
  auto code = CodeAt(kSeed20, now);
  ASSERT_TRUE(code);
  EXPECT_EQ(Verify(kSeed20, *code, now, step - 1), std::optional<int64_t>(step));
  EXPECT_EQ(Verify(kSeed20, *code, now, step), std::nullopt);      // replay
  EXPECT_EQ(Verify(kSeed20, *code, now, step + 1), std::nullopt);  // a later code was used
  auto previous = Hotp(kSeed20, static_cast<uint64_t>(step - 1));
  ASSERT_TRUE(previous);
  EXPECT_EQ(Verify(kSeed20, *previous, now, step), std::nullopt);
}

TEST(Totp, MalformedCodesAreRefused) {
  TimePoint now = FromUnix(1234567890);
  for (const char* bad : {"", "12345", "1234567", "12a456", " 12345", "０１２３４５"}) {
    EXPECT_EQ(Verify(kSeed20, bad, now, -1), std::nullopt) << bad;
  }
}

TEST(Base32, Rfc4648Vectors) {
  const std::pair<const char*, const char*> cases[] = {{"", ""},
                                                       {"f", "MY"},
                                                       {"fo", "MZXQ"},
                                                       {"foo", "MZXW6"},
                                                       {"foob", "MZXW6YQ"},
                                                       {"fooba", "MZXW6YTB"},
                                                       {"foobar", "MZXW6YTBOI"}};
  for (auto [plain, enc] : cases) {
    EXPECT_EQ(Base32Encode(plain), enc);
    auto dec = Base32Decode(enc);
    ASSERT_TRUE(dec);
    EXPECT_EQ(*dec, plain);
  }
  auto padded = Base32Decode("mzxw 6ytb oi======");
  ASSERT_TRUE(padded);
  EXPECT_EQ(*padded, "foobar");
  EXPECT_FALSE(Base32Decode("MZXW1"));  // '1' is not in the alphabet
}

TEST(Totp, UriNamesIssuerAccountAndParameters) {
  EXPECT_EQ(Uri("torwart", "anna@example", "MZXW6YTBOI"),
            "otpauth://totp/torwart:anna@example?secret=MZXW6YTBOI&issuer=torwart"
            "&algorithm=SHA1&digits=6&period=30");
  EXPECT_EQ(Uri("Acme GmbH", "a b", "X"),
            "otpauth://totp/Acme%20GmbH:a%20b?secret=X&issuer=Acme%20GmbH&algorithm=SHA1"
            "&digits=6&period=30");
}

}  // namespace
}  // namespace torwart::server::totp
