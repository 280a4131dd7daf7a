// torwart CLI commands: stream recordings (list, show). `show` downloads a recording and verifies
// it HERE, not on the server's word: the hash chain and the gateway's signature with the device
// certificate the server sends along, which must chain to the CA this CLI trusts.
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/recording.hpp"

namespace torwart::cli {
namespace {

constexpr int kExitTampered = 4;
constexpr size_t kMaxDownload = (size_t{1} << 30) + (size_t{1} << 20);

[[noreturn]] void Tampered(const std::string& id, const std::string& what, bool json_out) {
  if (json_out) PrintJson(json{{"id", id}, {"status", "tampered"}, {"error", what}});
  std::cerr << "torwart: recording " << id << " is TAMPERED: " << what << "\n";
  std::exit(kExitTampered);
}

// The device certificate must be issued by the CA in `ca_file` (time is not checked: the
// recording may be older than the certificate's end) for clientAuth, and name a device.
Expected<std::string> VerifyDeviceCertificate(X509* cert, const std::string& ca_file) {
  auto ca_pem = pki::ReadFile(ca_file);
  if (!ca_pem) return MakeError(ca_pem.error());
  auto cas = pki::CertsFromPem(*ca_pem);
  if (!cas || cas->empty())
    return MakeError(Errc::kInvalidArgument, "no CA certificates in " + ca_file);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_CTX* vctx = X509_STORE_CTX_new();
  bool ok = store != nullptr && vctx != nullptr;
  for (auto& c : *cas) ok = ok && X509_STORE_add_cert(store, c.get()) == 1;
  ok = ok && X509_STORE_CTX_init(vctx, store, cert, nullptr) == 1;
  int err = X509_V_OK;
  if (ok) {
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(vctx);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_NO_CHECK_TIME | X509_V_FLAG_X509_STRICT);
    X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_CLIENT);
    ok = X509_verify_cert(vctx) == 1;
    err = X509_STORE_CTX_get_error(vctx);
  }
  X509_STORE_CTX_free(vctx);
  X509_STORE_free(store);
  ERR_clear_error();
  if (!ok) {
    return MakeError(Errc::kPermissionDenied,
                     std::string("the device certificate does not chain to the trusted CA (") +
                         X509_verify_cert_error_string(err) + ")");
  }
  const std::string uuid = pki::SubjectCn(cert);
  bool san = false;
  for (const auto& uri : pki::SanUris(cert)) {
    san = san || uri == std::string(pki::kDeviceUriPrefix) + uuid;
  }
  if (!IsUuid(uuid) || !san) {
    return MakeError(Errc::kPermissionDenied,
                     "the signing certificate is not a device certificate");
  }
  return uuid;
}

std::string Size(int64_t n) {
  if (n < 10 * 1024) return std::to_string(n) + " B";
  if (n < 10 * 1024 * 1024) return std::to_string(n / 1024) + " KiB";
  return std::to_string(n / (1024 * 1024)) + " MiB";
}

}  // namespace

void RegisterRecordingCommands(CLI::App& app, Globals& g) {
  auto* rec = app.add_subcommand(
      "recording",
      "stream recordings made by the gateways: list them, show one decoded after verifying it "
      "locally (admin, auditor; technicians their own)");
  rec->require_subcommand(1);

  static int limit = 100;
  auto* list = rec->add_subcommand("list", "list recordings, newest upload first");
  list->add_option("--limit", limit, "at most this many (default 100, max 1000)");
  list->add_flag("--json", g.json_out, "machine-readable output");
  list->callback([&] {
    Api api(g, true);
    json r = api.Call("GET", "/api/v1/recordings?limit=" + std::to_string(limit));
    if (g.json_out) {
      PrintJson(r);
      return;
    }
    if (r["recordings"].empty()) {
      std::cout << "no recordings\n";
      return;
    }
    std::cout << Col("ID", 21) << Col("STARTED", 22) << Col("USER", 16) << Col("DEVICE", 14)
              << Col("TARGET", 12) << Col("SIZE", 10) << "STATUS\n";
    for (auto& x : r["recordings"]) {
      std::string started = x["started"].is_string() ? x["started"].get<std::string>() : "-";
      std::cout << Col(x.value("id", ""), 21) << Col(started, 22) << Col(x.value("user", ""), 16)
                << Col(x.value("device", ""), 14) << Col(x.value("target", ""), 12)
                << Col(Size(x.value("size", int64_t{0})), 10) << x.value("status", "") << "\n";
    }
  });

  static std::string id, out_file;
  auto* show = rec->add_subcommand(
      "show",
      "download a recording, verify it locally (hash chain, the gateway's signature, its device "
      "certificate against the CA given by --ca/at login) and print it decoded: Modbus requests "
      "and responses, other protocols as a hexdump with timing.\n"
      "Exit codes: 0 verified (an incomplete recording - cut off before the gateway signed it - "
      "is shown with a warning), 4 TAMPERED (a chunk does not chain, the signature or the "
      "device certificate does not verify, or a recording the server verified complete at "
      "upload has lost its signed trailer; the reason is on stderr), 1 other errors, 3 not "
      "allowed");
  show->add_option("ID", id, "recording id (the stream id, st-...)")->required();
  show->add_option("--out", out_file, "also save the downloaded file here, exactly as received");
  show->add_flag("--json", g.json_out, "print the decoded recording as JSON");
  show->callback([&] {
    Api api(g, true);
    if (api.ca().empty()) Die("--ca is needed to verify the recording's device certificate", 2);
    Api::Download dl = api.Get("/api/v1/recordings/" + UrlEncode(id), kMaxDownload);
    if (!out_file.empty()) {
      int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      bool ok = fd >= 0 &&
                ::write(fd, dl.body.data(), dl.body.size()) == static_cast<ssize_t>(dl.body.size());
      if (fd >= 0) ::close(fd);
      if (!ok) Die("cannot write " + out_file);
    }
    auto pem = Base64Decode(dl.headers["x-torwart-device-cert"]);
    if (!pem || pem->empty()) Die("the server sent no device certificate for recording " + id);
    auto cert = pki::CertFromPem(*pem);
    if (!cert) Die("the server sent an unreadable device certificate: " + cert.error().message());
    auto device = VerifyDeviceCertificate(cert->get(), api.ca());
    if (!device) Tampered(id, device.error().message(), g.json_out);
    auto r = tunnel::ReadRecording(dl.body, X509_get0_pubkey(cert->get()));
    if (!r) Tampered(id, r.error().message(), g.json_out);
    if (r->meta.device_id != *device) {
      Tampered(id, "it claims device " + r->meta.device_id + " but was signed by device " + *device,
               g.json_out);
    }
    if (r->meta.stream_id != id) {
      Tampered(id, "its header names stream " + r->meta.stream_id, g.json_out);
    }
    if (r->complete && !r->signature_ok) {
      Tampered(id, "the gateway's signature does not verify", g.json_out);
    }
    const std::string server_status = dl.headers["x-torwart-recording-status"];
    if (!r->complete && server_status == "verified") {
      // The reader alone cannot tell a damaged trailer from a recording cut off before it was
      // signed; the server verified this one complete and signed when it was uploaded.
      Tampered(id,
               "it was complete and signed when uploaded, now its signed trailer is "
               "missing or damaged" +
                   (r->incomplete.empty() ? "" : " (" + r->incomplete + ")"),
               g.json_out);
    }
    if (!r->complete) {
      std::cerr << "torwart: warning: recording " << id
                << " is incomplete: it ends without the gateway's signed trailer (the stream or "
                   "the gateway was cut off); every chunk present chains correctly\n";
    }
    if (server_status == "tampered_on_upload") {
      std::cerr << "torwart: warning: the server flagged recording " << id
                << " at upload (see `torwart recording list`)\n";
    }
    if (g.json_out) {
      json j{{"id", id},
             {"status", r->complete ? "verified" : "incomplete"},
             {"device_id", *device},
             {"certificate_serial", pki::SerialHex(cert->get())},
             {"chain_head", r->chain_head}};
      json body = json::parse(tunnel::RenderRecordingJson(*r), nullptr, false);
      j["recording"] = body.is_discarded() ? json(nullptr) : body;
      PrintJson(j);
      return;
    }
    std::cout << "recording " << id << ": "
              << (r->complete ? "verified (hash chain and gateway signature)"
                              : "INCOMPLETE (hash chain verified, no signed trailer)")
              << ", device " << *device << "\n"
              << tunnel::RenderRecordingText(*r);
  });
}

}  // namespace torwart::cli
