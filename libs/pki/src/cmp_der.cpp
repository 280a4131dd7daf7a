// Bounds-checked DER walk for CMP; see cmp_der.hpp. Every read checks the remaining length.
#include "torwart/pki/cmp_der.hpp"

#include <cstdint>

namespace torwart::pki {
namespace {

struct Tlv {
  uint8_t tag = 0;
  std::string_view content;
  std::string_view whole;
};

// Reads one TLV from the front of `in` and advances it. Only single-byte tags and definite
// lengths of at most 4 length bytes (DER for anything we accept).
std::optional<Tlv> ReadTlv(std::string_view& in) {
  if (in.size() < 2) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  Tlv tlv;
  tlv.tag = p[0];
  if ((tlv.tag & 0x1f) == 0x1f) return std::nullopt;  // high tag number form
  size_t pos = 1;
  size_t len = p[pos++];
  if (len & 0x80) {
    size_t n = len & 0x7f;
    if (n == 0 || n > 4 || in.size() < pos + n) return std::nullopt;  // indefinite or huge
    len = 0;
    for (size_t i = 0; i < n; ++i) len = (len << 8) | p[pos++];
    if (len < 0x80) return std::nullopt;  // not minimal: not DER
  }
  if (len > in.size() - pos) return std::nullopt;
  tlv.content = in.substr(pos, len);
  tlv.whole = in.substr(0, pos + len);
  in.remove_prefix(pos + len);
  return tlv;
}

Unexpected Bad(std::string what) { return MakeError(Errc::kParse, "CMP message: " + what); }

// An [n] EXPLICIT wrapper around one inner TLV of type `inner_tag`.
std::optional<std::string_view> ExplicitInner(const Tlv& outer, uint8_t inner_tag) {
  std::string_view in = outer.content;
  auto inner = ReadTlv(in);
  if (!inner || inner->tag != inner_tag || !in.empty()) return std::nullopt;
  return inner->content;
}

}  // namespace

std::string CmpBodyName(int t) {
  switch (t) {
    case kCmpIr: return "ir";
    case kCmpIp: return "ip";
    case kCmpCr: return "cr";
    case kCmpCp: return "cp";
    case kCmpP10cr: return "p10cr";
    case kCmpKur: return "kur";
    case kCmpKup: return "kup";
    case kCmpRr: return "rr";
    case kCmpRp: return "rp";
    case kCmpPkiConf: return "pkiconf";
    case kCmpGenm: return "genm";
    case kCmpGenp: return "genp";
    case kCmpError: return "error";
    case kCmpCertConf: return "certConf";
    case kCmpPollReq: return "pollReq";
    case kCmpPollRep: return "pollRep";
    default: return "body" + std::to_string(t);
  }
}

Expected<CmpMessageFields> ParseCmpMessageFields(std::string_view der) {
  CmpMessageFields f;
  std::string_view in = der;
  auto msg = ReadTlv(in);
  if (!msg || msg->tag != 0x30) return Bad("not a DER SEQUENCE");
  if (!in.empty()) return Bad("trailing bytes");
  std::string_view m = msg->content;

  auto header = ReadTlv(m);
  if (!header || header->tag != 0x30) return Bad("missing header");
  {
    std::string_view h = header->content;
    auto pvno = ReadTlv(h);
    if (!pvno || pvno->tag != 0x02) return Bad("missing pvno");
    auto sender = ReadTlv(h);
    auto recipient = ReadTlv(h);
    if (!sender || !recipient) return Bad("missing sender/recipient");
    int last = -1;
    while (!h.empty()) {
      auto field = ReadTlv(h);
      if (!field) return Bad("truncated header field");
      if ((field->tag & 0xe0) != 0xa0) return Bad("unexpected header field");
      int n = field->tag & 0x1f;
      if (n <= last || n > 8) return Bad("header fields out of order");
      last = n;
      switch (n) {
        case 0: {
          std::string_view c = field->content;
          auto t = ReadTlv(c);
          if (!t || t->tag != 0x18 || !c.empty()) return Bad("bad messageTime");
          f.message_time = std::string(t->whole);
          break;
        }
        case 1: {
          auto alg = ExplicitInner(*field, 0x30);
          if (!alg) return Bad("bad protectionAlg");
          std::string_view a = *alg;
          auto oid = ReadTlv(a);
          if (!oid || oid->tag != 0x06) return Bad("bad protectionAlg OID");
          f.protection_alg_oid = std::string(oid->content);
          break;
        }
        case 2: {
          auto v = ExplicitInner(*field, 0x04);
          if (!v) return Bad("bad senderKID");
          f.sender_kid = std::string(*v);
          break;
        }
        case 4: {
          auto v = ExplicitInner(*field, 0x04);
          if (!v) return Bad("bad transactionID");
          f.transaction_id = std::string(*v);
          break;
        }
        case 5: {
          auto v = ExplicitInner(*field, 0x04);
          if (!v) return Bad("bad senderNonce");
          f.sender_nonce = std::string(*v);
          break;
        }
        default:
          break;  // recipKID, recipNonce, freeText, generalInfo: not needed here
      }
    }
  }

  auto body = ReadTlv(m);
  if (!body || (body->tag & 0xe0) != 0xa0) return Bad("missing body");
  f.body_type = body->tag & 0x1f;
  if (f.body_type == kCmpRr) {
    // [11] EXPLICIT RevReqContent ::= SEQUENCE OF RevDetails
    auto content = ExplicitInner(*body, 0x30);
    if (!content) return Bad("bad rr body");
    std::string_view rc = *content;
    auto details = ReadTlv(rc);
    if (!details || details->tag != 0x30) return Bad("empty rr");
    std::string_view d = details->content;
    auto templ = ReadTlv(d);
    if (!templ || templ->tag != 0x30) return Bad("bad rr certDetails");
    if (!d.empty()) {
      auto exts = ReadTlv(d);
      if (!exts || exts->tag != 0x30) return Bad("bad rr crlEntryDetails");
      f.rr_crl_entry_details = std::string(exts->whole);
    }
  }

  while (!m.empty()) {
    auto opt = ReadTlv(m);
    if (!opt) return Bad("truncated trailer");
    if (opt->tag == 0xa0) {
      f.has_protection = true;
    } else if (opt->tag == 0xa1) {
      auto seq = ExplicitInner(*opt, 0x30);
      if (!seq) return Bad("bad extraCerts");
      std::string_view certs = *seq;
      while (!certs.empty()) {
        auto cert = ReadTlv(certs);
        if (!cert || cert->tag != 0x30) return Bad("bad extra certificate");
        if (f.extra_certs_der.size() >= 16) return Bad("too many extraCerts");
        f.extra_certs_der.emplace_back(cert->whole);
      }
    } else {
      return Bad("unexpected trailer field");
    }
  }
  return f;
}

Expected<std::string> CertTemplatePublicKeyDer(std::string_view template_der) {
  std::string_view in = template_der;
  auto tmpl = ReadTlv(in);
  if (!tmpl || tmpl->tag != 0x30 || !in.empty()) return Bad("bad CertTemplate");
  std::string_view t = tmpl->content;
  while (!t.empty()) {
    auto field = ReadTlv(t);
    if (!field) return Bad("truncated CertTemplate");
    if (field->tag == 0xa6) {
      std::string spki(field->whole);
      spki[0] = '\x30';  // [6] IMPLICIT SubjectPublicKeyInfo -> SEQUENCE
      return spki;
    }
  }
  return MakeError(Errc::kInvalidArgument, "certificate template has no public key");
}

Expected<int> PkiStatusFromDer(std::string_view der) {
  std::string_view in = der;
  auto si = ReadTlv(in);
  if (!si || si->tag != 0x30) return Bad("bad PKIStatusInfo");
  std::string_view c = si->content;
  auto status = ReadTlv(c);
  if (!status || status->tag != 0x02 || status->content.empty() || status->content.size() > 2)
    return Bad("bad PKIStatus");
  int v = static_cast<int8_t>(status->content[0]);
  if (status->content.size() == 2) v = v * 256 + static_cast<uint8_t>(status->content[1]);
  return v;
}

}  // namespace torwart::pki
