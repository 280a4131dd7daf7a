// Fuzzes the relay's leg-protocol parsers (docs/design/tunnel.md): the hello line every leg sends
// and the reply line the relay answers. Whatever parses must format back to the same line, and
// FormatErr must always produce a line the reply parser accepts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "torwart/tunnel/wire.hpp"

namespace tw = torwart::tunnel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // The relay hands the parsers the line without its '\n'.
  std::string_view line = in.substr(0, in.find('\n'));

  auto hello = tw::ParseHello(line);
  if (hello) {
    std::string again = hello->kind == tw::Hello::Kind::kConnect
                            ? tw::FormatConnect()
                            : tw::FormatAccept(hello->stream_id);
    if (again != std::string(line) + "\n") std::abort();
    if (hello->kind == tw::Hello::Kind::kAccept && !tw::IsStreamId(hello->stream_id)) {
      std::abort();
    }
  }

  auto reply = tw::ParseReply(line);
  if (reply) {
    if (reply->ok) {
      if (tw::FormatOk(reply->stream_id, reply->device_id) != std::string(line) + "\n") {
        std::abort();
      }
    } else if (reply->code.empty()) {
      std::abort();
    }
  }

  // Anything as an ERR code and message: always a valid, bounded reply line.
  size_t cut = in.size() / 3;
  std::string err = tw::FormatErr(in.substr(0, cut), in.substr(cut));
  if (err.size() > tw::kMaxLine || err.back() != '\n') std::abort();
  auto parsed = tw::ParseReply(std::string_view(err).substr(0, err.size() - 1));
  if (!parsed || parsed->ok) std::abort();
  return 0;
}
