#include "torwart/pki/grant_extension.hpp"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <utility>

namespace torwart::pki {
namespace {

constexpr size_t kMaxString = 256;
constexpr size_t kMaxScopes = 32;
constexpr size_t kMaxDer = 16 * 1024;

constexpr uint8_t kTagInteger = 0x02;
constexpr uint8_t kTagUtf8 = 0x0c;
constexpr uint8_t kTagGeneralizedTime = 0x18;
constexpr uint8_t kTagSequence = 0x30;

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      if (c == 0) return false;
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

void PutLength(std::string& out, size_t len) {
  if (len < 0x80) {
    out.push_back(static_cast<char>(len));
    return;
  }
  std::string bytes;
  while (len > 0) {
    bytes.insert(bytes.begin(), static_cast<char>(len & 0xff));
    len >>= 8;
  }
  out.push_back(static_cast<char>(0x80 | bytes.size()));
  out += bytes;
}

void PutTlv(std::string& out, uint8_t tag, std::string_view content) {
  out.push_back(static_cast<char>(tag));
  PutLength(out, content.size());
  out.append(content);
}

Expected<std::string> TimeString(TimePoint t) {
  using namespace std::chrono;
  auto secs = floor<seconds>(t);
  auto day = floor<days>(secs);
  year_month_day ymd{day};
  int y = static_cast<int>(ymd.year());
  // 2261: system_clock (nanoseconds) ends in April 2262.
  if (y < 1950 || y > 2261) return MakeError(Errc::kInvalidArgument, "grant time out of range");
  hh_mm_ss hms{secs - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d%02u%02u%02d%02d%02dZ", y,
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return std::string(buf);
}

Expected<TimePoint> ParseTime(std::string_view s) {
  using namespace std::chrono;
  if (s.size() != 15 || s[14] != 'Z') {
    return MakeError(Errc::kParse, "grant not_after is not YYYYMMDDHHMMSSZ");
  }
  int v[6];
  const int widths[6] = {4, 2, 2, 2, 2, 2};
  size_t p = 0;
  for (int i = 0; i < 6; ++i) {
    v[i] = 0;
    for (int k = 0; k < widths[i]; ++k, ++p) {
      if (s[p] < '0' || s[p] > '9') return MakeError(Errc::kParse, "grant not_after: not a digit");
      v[i] = v[i] * 10 + (s[p] - '0');
    }
  }
  year_month_day ymd{year(v[0]), month(static_cast<unsigned>(v[1])),
                     day(static_cast<unsigned>(v[2]))};
  if (v[0] < 1950 || v[0] > 2261 || !ymd.ok() || v[3] > 23 || v[4] > 59 || v[5] > 59) {
    return MakeError(Errc::kParse, "grant not_after is not a valid time");
  }
  return sys_days(ymd) + hours(v[3]) + minutes(v[4]) + seconds(v[5]);
}

// A strict DER reader over a byte range.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ == data_.size(); }

  // Reads one TLV with the expected tag; its content goes to `content`.
  Expected<void> Read(uint8_t tag, std::string_view& content, const char* what) {
    auto bad = [&](const std::string& why) {
      return MakeError(Errc::kParse, std::string("grant extension: ") + what + ": " + why);
    };
    if (pos_ >= data_.size()) return bad("missing");
    if (static_cast<uint8_t>(data_[pos_]) != tag) return bad("wrong tag");
    ++pos_;
    if (pos_ >= data_.size()) return bad("truncated length");
    auto first = static_cast<uint8_t>(data_[pos_++]);
    size_t len = 0;
    if (first < 0x80) {
      len = first;
    } else {
      size_t n = first & 0x7f;
      if (n == 0 || n > 2) return bad("unsupported length");
      if (pos_ + n > data_.size()) return bad("truncated length");
      for (size_t i = 0; i < n; ++i) len = (len << 8) | static_cast<uint8_t>(data_[pos_++]);
      // DER: minimal length encoding.
      if (len < 0x80 || (n == 2 && len < 0x100)) return bad("non-minimal length");
    }
    if (len > data_.size() - pos_) return bad("truncated content");
    content = data_.substr(pos_, len);
    pos_ += len;
    return {};
  }

  Expected<std::string> Utf8(const char* what, bool allow_empty) {
    std::string_view c;
    if (auto r = Read(kTagUtf8, c, what); !r) return MakeError(r.error());
    if (c.size() > kMaxString || (!allow_empty && c.empty()) || !ValidUtf8(c)) {
      return MakeError(Errc::kParse,
                       std::string("grant extension: ") + what + ": empty, too long or not UTF-8");
    }
    return std::string(c);
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

Expected<void> CheckString(const std::string& s, const char* what, bool allow_empty) {
  if ((!allow_empty && s.empty()) || s.size() > kMaxString || !ValidUtf8(s)) {
    return MakeError(Errc::kInvalidArgument,
                     std::string("grant ") + what + " must be 1-256 bytes of UTF-8");
  }
  return {};
}

const ASN1_OBJECT* GrantObject() {
  static ASN1_OBJECT* obj = OBJ_txt2obj(kGrantExtensionOid, 1);
  return obj;
}

}  // namespace

Expected<std::string> EncodeGrantClaims(const GrantClaims& c) {
  for (auto [s, what] : {std::pair{&c.grant_id, "id"}, std::pair{&c.user, "user"},
                         std::pair{&c.site, "site"}, std::pair{&c.target, "target"}}) {
    if (auto r = CheckString(*s, what, false); !r) return MakeError(r.error());
  }
  if (c.scopes.size() > kMaxScopes) {
    return MakeError(Errc::kInvalidArgument, "a grant has at most 32 scopes");
  }
  std::string scopes;
  for (const auto& s : c.scopes) {
    if (auto r = CheckString(s, "scope", false); !r) return MakeError(r.error());
    PutTlv(scopes, kTagUtf8, s);
  }
  auto time = TimeString(c.not_after);
  if (!time) return MakeError(time.error());
  std::string body;
  PutTlv(body, kTagInteger, std::string(1, static_cast<char>(kGrantExtensionVersion)));
  PutTlv(body, kTagUtf8, c.grant_id);
  PutTlv(body, kTagUtf8, c.user);
  PutTlv(body, kTagUtf8, c.site);
  PutTlv(body, kTagUtf8, c.target);
  PutTlv(body, kTagSequence, scopes);
  PutTlv(body, kTagGeneralizedTime, *time);
  std::string out;
  PutTlv(out, kTagSequence, body);
  return out;
}

Expected<GrantClaims> DecodeGrantClaims(std::string_view der) {
  if (der.size() > kMaxDer) return MakeError(Errc::kParse, "grant extension: too large");
  Reader outer(der);
  std::string_view body;
  if (auto r = outer.Read(kTagSequence, body, "TorwartGrant"); !r) return MakeError(r.error());
  if (!outer.done()) return MakeError(Errc::kParse, "grant extension: trailing bytes");
  Reader in(body);
  std::string_view version;
  if (auto r = in.Read(kTagInteger, version, "version"); !r) return MakeError(r.error());
  if (version.size() != 1 || static_cast<uint8_t>(version[0]) != kGrantExtensionVersion) {
    return MakeError(Errc::kParse, "grant extension: unsupported version");
  }
  GrantClaims c;
  auto id = in.Utf8("grantId", false);
  if (!id) return MakeError(id.error());
  auto user = in.Utf8("user", false);
  if (!user) return MakeError(user.error());
  auto site = in.Utf8("site", false);
  if (!site) return MakeError(site.error());
  auto target = in.Utf8("target", false);
  if (!target) return MakeError(target.error());
  c.grant_id = std::move(*id);
  c.user = std::move(*user);
  c.site = std::move(*site);
  c.target = std::move(*target);
  std::string_view scopes;
  if (auto r = in.Read(kTagSequence, scopes, "scopes"); !r) return MakeError(r.error());
  Reader sr(scopes);
  while (!sr.done()) {
    if (c.scopes.size() == kMaxScopes) return MakeError(Errc::kParse, "grant extension: too many scopes");
    auto s = sr.Utf8("scope", false);
    if (!s) return MakeError(s.error());
    c.scopes.push_back(std::move(*s));
  }
  std::string_view time;
  if (auto r = in.Read(kTagGeneralizedTime, time, "notAfter"); !r) return MakeError(r.error());
  auto t = ParseTime(time);
  if (!t) return MakeError(t.error());
  c.not_after = *t;
  if (!in.done()) return MakeError(Errc::kParse, "grant extension: trailing fields");
  return c;
}

Expected<X509ExtensionPtr> MakeGrantExtension(const GrantClaims& claims) {
  auto der = EncodeGrantClaims(claims);
  if (!der) return MakeError(der.error());
  ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
  X509ExtensionPtr ext;
  if (os != nullptr && GrantObject() != nullptr &&
      ASN1_OCTET_STRING_set(os, reinterpret_cast<const unsigned char*>(der->data()),
                            static_cast<int>(der->size())) == 1) {
    ext.reset(X509_EXTENSION_create_by_OBJ(nullptr, GrantObject(), 0, os));
  }
  ASN1_OCTET_STRING_free(os);
  if (!ext) {
    std::string why = OpenSslErrorString();
    return MakeError(Errc::kInternal, "building grant extension: " + why);
  }
  return ext;
}

Expected<std::optional<GrantClaims>> GrantClaimsOf(const X509* cert) {
  if (cert == nullptr) return MakeError(Errc::kInvalidArgument, "null certificate");
  if (GrantObject() == nullptr) return MakeError(Errc::kInternal, "grant OID");
  int idx = X509_get_ext_by_OBJ(cert, GrantObject(), -1);
  if (idx < 0) return std::optional<GrantClaims>();
  if (X509_get_ext_by_OBJ(cert, GrantObject(), idx) >= 0) {
    return MakeError(Errc::kParse, "certificate has two grant extensions");
  }
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(cert, idx));
  std::string_view der(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                       static_cast<size_t>(ASN1_STRING_length(data)));
  auto c = DecodeGrantClaims(der);
  if (!c) return MakeError(c.error());
  return std::optional<GrantClaims>(std::move(*c));
}

}  // namespace torwart::pki
