// Fuzzes what the offline verifier decodes from an untrusted database file: record fields
// (enum text, details JSON of audit.purged events, hashes) and checkpoints (base64 signatures),
// plus the syslog octet-counting parser. Input: lines "field|field|..." per record; a line
// starting with "cp|" is a checkpoint. Must never crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/audit/syslog.hpp"
#include "torwart/audit/verify.hpp"

using namespace torwart::audit;

namespace {

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep, start);
    out.emplace_back(s.substr(start, p == std::string_view::npos ? s.size() - start : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

int64_t Num(const std::string& s) {
  int64_t v = 0;
  for (char c : s.substr(0, 12)) v = v * 10 + (c >= '0' && c <= '9' ? c - '0' : 0);
  return v;
}

const CheckpointVerifier* Key() {
  static const CheckpointVerifier* key = [] {
    auto pem = CheckpointSigner::GeneratePrivateKeyPem();
    auto signer = CheckpointSigner::FromPrivateKeyPem(*pem);
    auto v = CheckpointVerifier::FromPublicKeyPem(signer->public_key_pem());
    return new CheckpointVerifier(std::move(*v));
  }();
  return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t used = 0;
  bool bad = false;
  (void)ParseOctetCounted(in, used, bad);

  std::vector<Checkpoint> cps;
  std::vector<Record> records;
  for (const std::string& line : Split(in, '\n')) {
    auto f = Split(line, '|');
    if (f.size() >= 4 && f[0] == "cp") {
      Checkpoint c;
      c.seq = Num(f[1]);
      c.hash = f[2];
      c.signature = f[3];
      c.key_id = Key()->key_id();
      cps.push_back(c);
      continue;
    }
    f.resize(8);
    Record r;
    r.event.seq = Num(f[0]);
    r.event.type = f[1];
    r.event.category = f[2];
    r.event.details = f[3];
    r.content_hash = f[4];
    r.event.hash = f[5];
    r.purged = !f[6].empty();
    r.event.actor_type = ActorTypeFromString(f[7]).value_or(ActorType::kSystem);
    records.push_back(r);
    (void)FormatRfc5424(r.event, SyslogOptions{});
  }
  ChainVerifier v(Key(), cps, records.empty() ? 0 : records.back().event.seq + 1);
  for (const Record& r : records) v.Add(r);
  (void)ToJson(v.Finish());
  return 0;
}
