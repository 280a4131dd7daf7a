// A stable fingerprint of the machine the agent runs on, sent at enrollment so the server can
// notice a device identity copied to other hardware. Thread-safe (stateless; reads files).
#pragma once

#include <string>

#include "torwart/core/error.hpp"

namespace torwart::pki {

// Where the inputs come from; the agent's config (or a test) may point elsewhere.
struct FingerprintSources {
  std::string machine_id = "/etc/machine-id";                       // required
  std::string product_uuid = "/sys/class/dmi/id/product_uuid";      // optional
  std::string product_serial = "/sys/class/dmi/id/product_serial";  // optional, root-only
};

// Lowercase hex SHA-256 over the machine id and whichever DMI values are readable and not
// placeholders ("Not Specified", all-zero UUIDs, ...). kNotFound if the machine id is missing or
// empty. The value differs between root and other users where product_serial is root-only.
Expected<std::string> MachineFingerprint(const FingerprintSources& sources = {});

}  // namespace torwart::pki
