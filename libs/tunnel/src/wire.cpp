#include "torwart/tunnel/wire.hpp"

#include <openssl/rand.h>

#include <cstdlib>

namespace torwart::tunnel {
namespace {

constexpr std::string_view kMagic = "TORWART/1 ";
constexpr std::string_view kConnect = "CONNECT";
constexpr std::string_view kAccept = "ACCEPT ";

bool IsPrintable(char c) { return c >= 0x20 && c < 0x7f; }
bool IsTokenChar(char c) { return c > 0x20 && c < 0x7f; }

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// Shared checks for both parsers: length and character set.
Expected<void> CheckLine(std::string_view line, std::string_view what) {
  if (line.size() + 1 > kMaxLine) {
    return MakeError(Errc::kParse, std::string(what) + ": line longer than " +
                                       std::to_string(kMaxLine) + " bytes");
  }
  for (char c : line) {
    if (!IsPrintable(c)) {
      return MakeError(Errc::kParse,
                       std::string(what) + ": control or non-ASCII character in the line");
    }
  }
  return {};
}

std::string Quote(std::string_view s) {
  constexpr size_t kShown = 40;
  std::string out = "'";
  out += s.substr(0, kShown);
  if (s.size() > kShown) out += "...";
  out += "'";
  return out;
}

}  // namespace

bool IsStreamId(std::string_view s) {
  if (s.size() != 19 || s.substr(0, 3) != "st-") return false;
  for (char c : s.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string NewStreamId() {
  unsigned char raw[8];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    // The CSPRNG failing is a broken invariant of the process, not a recoverable error.
    std::abort();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "st-";
  for (unsigned char b : raw) {
    id += kHex[b >> 4];
    id += kHex[b & 0x0f];
  }
  return id;
}

Expected<Hello> ParseHello(std::string_view line) {
  if (auto ok = CheckLine(line, "hello"); !ok) return MakeError(ok.error());
  if (line.substr(0, kMagic.size()) != kMagic) {
    return MakeError(Errc::kParse,
                     "hello: expected 'TORWART/1 CONNECT' or 'TORWART/1 ACCEPT "
                     "<stream>', got " +
                         Quote(line));
  }
  std::string_view rest = line.substr(kMagic.size());
  Hello h;
  if (rest == kConnect) {
    h.kind = Hello::Kind::kConnect;
    return h;
  }
  if (rest.substr(0, kAccept.size()) == kAccept) {
    std::string_view id = rest.substr(kAccept.size());
    if (!IsStreamId(id)) {
      return MakeError(
          Errc::kParse,
          "hello: ACCEPT needs a stream id 'st-' + 16 lowercase hex, got " + Quote(id));
    }
    h.kind = Hello::Kind::kAccept;
    h.stream_id = std::string(id);
    return h;
  }
  return MakeError(Errc::kParse, "hello: unknown verb in " + Quote(line));
}

Expected<Reply> ParseReply(std::string_view line) {
  if (auto ok = CheckLine(line, "reply"); !ok) return MakeError(ok.error());
  Reply r;
  if (line.substr(0, 3) == "OK ") {
    std::string_view rest = line.substr(3);
    size_t sp = rest.find(' ');
    if (sp == std::string_view::npos) {
      return MakeError(Errc::kParse, "reply: OK needs '<stream> <device>', got " + Quote(line));
    }
    std::string_view stream = rest.substr(0, sp);
    std::string_view device = rest.substr(sp + 1);
    if (!IsStreamId(stream)) {
      return MakeError(Errc::kParse, "reply: OK with a bad stream id " + Quote(stream));
    }
    if (!IsToken(device)) {
      return MakeError(Errc::kParse, "reply: OK with a bad device id " + Quote(device));
    }
    r.ok = true;
    r.stream_id = std::string(stream);
    r.device_id = std::string(device);
    return r;
  }
  if (line.substr(0, 4) == "ERR ") {
    std::string_view rest = line.substr(4);
    size_t sp = rest.find(' ');
    std::string_view code = rest.substr(0, sp);
    if (!IsToken(code)) {
      return MakeError(Errc::kParse, "reply: ERR needs a code, got " + Quote(line));
    }
    r.ok = false;
    r.code = std::string(code);
    if (sp != std::string_view::npos) r.message = std::string(rest.substr(sp + 1));
    return r;
  }
  return MakeError(Errc::kParse, "reply: expected 'OK ...' or 'ERR ...', got " + Quote(line));
}

std::string FormatConnect() { return std::string(kMagic) + std::string(kConnect) + "\n"; }

std::string FormatAccept(std::string_view stream_id) {
  return std::string(kMagic) + std::string(kAccept) + std::string(stream_id) + "\n";
}

std::string FormatOk(std::string_view stream_id, std::string_view device_id) {
  return "OK " + std::string(stream_id) + " " + std::string(device_id) + "\n";
}

std::string FormatErr(std::string_view code, std::string_view message) {
  std::string c;
  for (char ch : code.substr(0, 64)) c += IsTokenChar(ch) ? ch : '_';
  if (c.empty()) c = "error";
  std::string out = "ERR " + c;
  if (!message.empty()) {
    out += ' ';
    // Room for the '\n'; never cut inside the (ASCII-only) result.
    size_t room = kMaxLine - 1 - out.size();
    for (char ch : message) {
      if (room == 0) break;
      out += IsPrintable(ch) ? ch : '?';
      --room;
    }
  }
  out += '\n';
  return out;
}

}  // namespace torwart::tunnel
