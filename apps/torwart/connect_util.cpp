#include "connect_util.hpp"

#include <openssl/x509v3.h>

#include <regex>

#include "torwart/pki/ca.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::cli {

// "tls://host:port" or "tls://[v6]:port".
std::optional<HostPort> ParseRelayUrl(const std::string& url) {
  static const std::regex re(R"(^tls://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})/?$)");
  std::smatch m;
  if (!std::regex_match(url, m, re)) return std::nullopt;
  int port = std::stoi(m[2].str());
  if (port <= 0 || port > 65535) return std::nullopt;
  std::string host = m[1].str();
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  return HostPort{host, static_cast<uint16_t>(port)};
}

namespace {

bool IsUuid(const std::string& s) {
  static const std::regex re("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
  return std::regex_match(s, re);
}

}  // namespace

// The inner TLS server must be the device the relay named (chain already verified against our
// CA by the inner context): a device certificate (CN = UUID, SAN urn:torwart:device:<uuid>, EKU
// clientAuth) for `device_id`, and, if known, the gateway the policy puts in front of the target.
Expected<void> VerifyGateway(const std::string& leaf_der, const std::string& device_id,
                             const std::string& expected_device) {
  if (!IsUuid(device_id)) {
    return MakeError(Errc::kPermissionDenied, "the relay named no valid device id");
  }
  if (!expected_device.empty() && device_id != expected_device) {
    return MakeError(Errc::kPermissionDenied, "the relay paired us with device " + device_id +
                                                  ", but the target's gateway is " +
                                                  expected_device);
  }
  auto cert = pki::CertFromDer(leaf_der);
  if (!cert)
    return MakeError(Errc::kPermissionDenied, "gateway certificate: " + cert.error().message());
  if (pki::SubjectCn(cert->get()) != device_id) {
    return MakeError(Errc::kPermissionDenied, "gateway certificate is for '" +
                                                  pki::SubjectCn(cert->get()) + "', not device " +
                                                  device_id);
  }
  bool san = false;
  for (const auto& uri : pki::SanUris(cert->get())) {
    if (uri.rfind(pki::kDeviceUriPrefix, 0) == 0) {
      if (uri != std::string(pki::kDeviceUriPrefix) + device_id) {
        return MakeError(Errc::kPermissionDenied, "gateway certificate names another device");
      }
      san = true;
    }
  }
  if (!san)
    return MakeError(Errc::kPermissionDenied, "gateway certificate is not a device certificate");
  uint32_t xku = X509_get_extended_key_usage(cert->get());
  if ((xku & XKU_SSL_CLIENT) == 0) {
    return MakeError(Errc::kPermissionDenied, "gateway certificate lacks clientAuth");
  }
  return {};
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

std::vector<std::string> UsageLines(const std::string& protocol, const std::string& host,
                                    uint16_t port) {
  std::string p = std::to_string(port), h = HostForUrl(host);
  if (protocol == "modbus") return {"mbpoll -m tcp -a 1 -r 1 -c 10 -t 4 -p " + p + " -1 " + host};
  if (protocol == "ssh") {
    return {"ssh -p " + p + " user@" + host,
            "(the host key is the target's own; it is remembered under [" + host + "]:" + p +
                ": add -o HostKeyAlias=TARGET to keep one entry per target)"};
  }
  if (protocol == "rdp") return {"xfreerdp /v:" + h + ":" + p};
  if (protocol == "https") return {"https://" + h + ":" + p + "/"};
  if (protocol == "http") return {"http://" + h + ":" + p + "/"};
  if (protocol == "vnc") return {"vncviewer " + h + "::" + p};
  return {"nc " + host + " " + p};
}

std::string HumanLeft(std::chrono::seconds left) {
  auto s = left.count();
  if (s < 0) s = 0;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m";
  return std::to_string(s / 3600) + "h" +
         (s % 3600 / 60 ? std::to_string(s % 3600 / 60) + "m" : "");
}

std::string Substitute(std::string cmd, const std::string& host, const std::string& port) {
  for (auto [from, to] : {std::pair<std::string, std::string>{"{port}", port}, {"{host}", host}}) {
    for (size_t pos = cmd.find(from); pos != std::string::npos;
         pos = cmd.find(from, pos + to.size())) {
      cmd.replace(pos, from.size(), to);
    }
  }
  return cmd;
}

}  // namespace torwart::cli
