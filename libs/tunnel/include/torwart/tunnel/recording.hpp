// Stream recordings (docs/design/recording.md): what crossed the gateway, both directions, with
// timestamps and events, in zlib-compressed chunks that are hash-chained (SHA-256) and whose
// chain head is signed by the gateway's device key in the trailer. Written by the agent while a
// stream runs, uploaded to torwartd store-and-forward, verified and decoded by
// `torwart recording show`. The reader sees untrusted input (fuzz target
// tests/fuzz/fuzz_recording.cpp).
#pragma once

#include <openssl/evp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/tunnel/hooks.hpp"

namespace torwart::tunnel {

struct RecordingMeta {
  std::string stream_id, grant_id, user, device_id, site, target, protocol;  // protocol: "modbus", "ssh", …
  std::vector<std::string> scopes;
  int64_t started_ms = 0;  // Unix ms
};

// Signs a 32-byte SHA-256 digest (ECDSA, DER signature). The agent signs with its device key.
using RecordingSigner = std::function<Expected<std::string>(std::string_view digest)>;
RecordingSigner SignerFromKey(EVP_PKEY* key);  // key not owned, must outlive the signer

// Writes `path` (created 0600, must not exist). Chunks are flushed to disk (write + fdatasync)
// when 64 KiB are buffered, at least every second that has data, and at Finish, so a crash loses
// at most the last second. A recording without a trailer is "incomplete", not "tampered".
class RecordingWriter : public StreamRecorder {
 public:
  static Expected<std::unique_ptr<RecordingWriter>> Create(const std::string& path,
                                                           const RecordingMeta& meta,
                                                           RecordingSigner signer);
  // StreamRecorder: OnData, OnEvent, Finish (trailer with the signed chain head).
  virtual uint64_t bytes_written() const = 0;
  // False once writing failed (disk full, I/O error): later data is dropped and the file stays
  // without a trailer ("incomplete"). The caller decides whether to end the stream.
  virtual bool healthy() const = 0;
};

struct RecordedItem {
  int64_t t_ms = 0;  // Unix ms
  enum class Kind { kData, kEvent } kind = Kind::kData;
  Direction dir = Direction::kToTarget;  // kData
  std::string bytes;                     // kData: the payload; kEvent: "type detail"
};

struct Recording {
  RecordingMeta meta;
  std::vector<RecordedItem> items;
  bool complete = false;      // the trailer is there
  bool signature_ok = false;  // the trailer's signature verifies with the given public key
  std::string end_reason;     // from the trailer
  std::string chain_head;     // hex
  std::string incomplete;     // when !complete: why ("no trailer", "chunk 4 at offset … truncated")
};

// Parses and verifies. Tampering (a chunk's hash does not chain, a bad signature, a damaged
// chunk, trailing garbage) is kDataLoss with a message naming the chunk and byte offset.
// `signer_public_key` (from the device certificate) may be null: then only the chain is checked
// and signature_ok stays false. Limits: 1 GiB decompressed, chunks ≤ 1 MiB.
Expected<Recording> ReadRecording(std::string_view file, EVP_PKEY* signer_public_key);

// Human-readable rendering: a header, then one line per item with the time offset (s.ms),
// direction arrow, and for protocol "modbus" the decoded ADUs (DecodeModbus), otherwise a
// hexdump (16 bytes per line) with the ASCII column. JSON: {"meta":{…},"complete":…,
// "items":[{"t_ms":…,"dir":"to_target"|"from_target"|"event","decoded":[…]|"hex":"…"}]}.
std::string RenderRecordingText(const Recording& r);
std::string RenderRecordingJson(const Recording& r);

}  // namespace torwart::tunnel
