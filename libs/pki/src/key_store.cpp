// OpenKeyStore (the spec dispatcher) and the RFC 7512 PKCS#11 URI codec.
#include "torwart/pki/key_store.hpp"

#include <filesystem>
#include <set>
#include <string_view>

namespace torwart::pki {
namespace {

constexpr std::string_view kPkcs11Scheme = "pkcs11:";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Expected<std::string> PercentDecode(std::string_view in, std::string_view attr) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    int hi = i + 2 < in.size() ? HexValue(in[i + 1]) : -1;
    int lo = hi >= 0 ? HexValue(in[i + 2]) : -1;
    if (lo < 0) {
      return MakeError(Errc::kInvalidArgument,
                       "pkcs11 URI: bad percent-encoding in attribute '" + std::string(attr) + "'");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

bool IsUnreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

std::string PercentEncode(std::string_view in, bool encode_all) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if (!encode_all && IsUnreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

// Splits "a=b<sep>c=d" and calls `set(name, decoded_value)` for each; empty items are skipped.
template <class Set>
Expected<void> ParseAttributes(std::string_view text, char sep, Set&& set) {
  while (!text.empty()) {
    size_t end = text.find(sep);
    std::string_view item = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return MakeError(Errc::kInvalidArgument,
                       "pkcs11 URI: expected name=value, got '" + std::string(item) + "'");
    }
    std::string_view name = item.substr(0, eq);
    auto value = PercentDecode(item.substr(eq + 1), name);
    if (!value) return MakeError(value.error());
    auto ok = set(std::string(name), std::move(*value));
    if (!ok) return ok;
  }
  return {};
}

}  // namespace

std::string Pkcs11Uri::ToString() const {
  std::string out(kPkcs11Scheme);
  auto add = [&out](std::string_view name, std::string_view value, bool encode_all) {
    if (out.size() > kPkcs11Scheme.size()) out.push_back(';');
    out.append(name).push_back('=');
    out.append(PercentEncode(value, encode_all));
  };
  if (!model.empty()) add("model", model, false);
  if (!manufacturer.empty()) add("manufacturer", manufacturer, false);
  if (!serial.empty()) add("serial", serial, false);
  if (!token.empty()) add("token", token, false);
  if (!object.empty()) add("object", object, false);
  if (id) add("id", *id, true);
  add("type", "private", false);
  return out;
}

Expected<Pkcs11Uri> ParsePkcs11Uri(const std::string& text) {
  if (!text.starts_with(kPkcs11Scheme)) {
    return MakeError(Errc::kInvalidArgument, "not a pkcs11: URI");
  }
  std::string_view rest = std::string_view(text).substr(kPkcs11Scheme.size());
  size_t q = rest.find('?');
  std::string_view path = rest.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);

  Pkcs11Uri uri;
  std::set<std::string> seen;
  auto set = [&](const std::string& name, std::string value) -> Expected<void> {
    if (!seen.insert(name).second) {
      return MakeError(Errc::kInvalidArgument, "pkcs11 URI: attribute '" + name + "' repeated");
    }
    if (name == "token") {
      uri.token = std::move(value);
    } else if (name == "object") {
      uri.object = std::move(value);
    } else if (name == "id") {
      uri.id = std::move(value);
    } else if (name == "serial") {
      uri.serial = std::move(value);
    } else if (name == "manufacturer") {
      uri.manufacturer = std::move(value);
    } else if (name == "model") {
      uri.model = std::move(value);
    } else if (name == "type") {
      if (value != "private") {
        return MakeError(Errc::kInvalidArgument,
                         "pkcs11 URI: type must be 'private' for a key store, got '" + value + "'");
      }
    } else if (name == "pin-value") {
      uri.pin = std::move(value);
    } else if (name == "module-path") {
      uri.module_path = std::move(value);
    } else {
      return MakeError(Errc::kInvalidArgument,
                       "pkcs11 URI: attribute '" + name + "' is not supported by the key store");
    }
    return {};
  };
  auto parsed = ParseAttributes(path, ';', set);
  if (!parsed) return MakeError(parsed.error());
  parsed = ParseAttributes(query, '&', set);
  if (!parsed) return MakeError(parsed.error());
  if (uri.token.empty() && uri.serial.empty()) {
    return MakeError(Errc::kInvalidArgument,
                     "pkcs11 URI: needs token= or serial= (" + uri.ToString() + ")");
  }
  if (uri.object.empty() && !uri.id) {
    return MakeError(Errc::kInvalidArgument,
                     "pkcs11 URI: needs object= or id= to name the key (" + uri.ToString() + ")");
  }
  return uri;
}

Expected<std::unique_ptr<KeyStore>> OpenKeyStore(const std::string& spec,
                                                 const KeyStoreOptions& options) {
  if (spec == "file") {
    if (options.state_dir.empty()) {
      return MakeError(Errc::kInvalidArgument, "key store 'file' needs a state directory");
    }
    return OpenFileKeyStore((std::filesystem::path(options.state_dir) / "device.key").string());
  }
  if (spec.starts_with("file:")) {
    return OpenFileKeyStore(spec.substr(5));
  }
  if (spec.starts_with(kPkcs11Scheme)) {
    auto uri = ParsePkcs11Uri(spec);
    if (!uri) return MakeError(uri.error());
    return OpenPkcs11KeyStore(*uri, options);
  }
  return MakeError(Errc::kInvalidArgument,
                   "unknown key store '" + spec + "' (expected file, file:/path or pkcs11:...)");
}

}  // namespace torwart::pki
