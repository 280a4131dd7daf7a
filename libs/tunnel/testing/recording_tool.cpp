// torwart-recording-tool (test-only, not installed): writes a stream recording with the real
// RecordingWriter, signed with a given private key, so system tests can upload, list, show and
// tamper with recordings without running a whole tunnel.
//   torwart-recording-tool --key dev.key --out st.rec --stream st-… --device <uuid>
//       [--user U] [--grant ar-…] [--site S] [--target T] [--protocol modbus]
//       [--item to:<hex>] [--item from:<hex>] [--item event:<type>:<detail>] … [--no-finish]
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "torwart/core/ids.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/recording.hpp"

using namespace torwart;

int main(int argc, char** argv) {
  CLI::App app{"torwart-recording-tool: write a signed stream recording (for tests)"};
  std::string key_file, out;
  tunnel::RecordingMeta meta;
  std::vector<std::string> items;
  std::string reason = "closed";
  bool no_finish = false;
  meta.protocol = "raw";
  app.add_option("--key", key_file, "the device's private key (PEM)")->required();
  app.add_option("--out", out, "the recording file to create (must not exist)")->required();
  app.add_option("--stream", meta.stream_id, "stream id st-…")->required();
  app.add_option("--device", meta.device_id, "device UUID")->required();
  app.add_option("--user", meta.user, "technician");
  app.add_option("--grant", meta.grant_id, "grant id ar-…");
  app.add_option("--site", meta.site, "site");
  app.add_option("--target", meta.target, "target name");
  app.add_option("--protocol", meta.protocol, "modbus, ssh, raw, …");
  app.add_option("--item", items,
                 "in order: to:<hex> (technician -> target), from:<hex> (target -> technician), "
                 "event:<type>:<detail>");
  app.add_option("--reason", reason, "end reason in the trailer");
  app.add_flag("--no-finish", no_finish, "leave the trailer out (an incomplete recording)");
  CLI11_PARSE(app, argc, argv);

  auto key = pki::ReadPrivateKeyFile(key_file);
  if (!key) {
    std::cerr << "torwart-recording-tool: " << key.error().message() << "\n";
    return 1;
  }
  meta.started_ms = ToUnix(SystemClock::Instance().Now()) * 1000;
  auto w = tunnel::RecordingWriter::Create(out, meta, tunnel::SignerFromKey(key->get()));
  if (!w) {
    std::cerr << "torwart-recording-tool: " << w.error().message() << "\n";
    return 1;
  }
  for (const std::string& item : items) {
    size_t colon = item.find(':');
    std::string kind = item.substr(0, colon);
    std::string rest = colon == std::string::npos ? "" : item.substr(colon + 1);
    if (kind == "to" || kind == "from") {
      auto bytes = HexDecode(rest);
      if (!bytes) {
        std::cerr << "torwart-recording-tool: bad hex in --item " << item << "\n";
        return 2;
      }
      (*w)->OnData(kind == "to" ? tunnel::Direction::kToTarget : tunnel::Direction::kFromTarget,
                   *bytes);
    } else if (kind == "event") {
      size_t c2 = rest.find(':');
      (*w)->OnEvent(rest.substr(0, c2), c2 == std::string::npos ? "" : rest.substr(c2 + 1));
    } else {
      std::cerr << "torwart-recording-tool: --item must start with to:, from: or event:\n";
      return 2;
    }
  }
  if (!no_finish) (*w)->Finish(reason);
  std::cout << out << " " << (*w)->bytes_written() << "\n";
  return 0;
}
