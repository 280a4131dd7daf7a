// Wires the control channel into torwartd: torwartd's broker client certificate, the managed
// Mosquitto (or an external broker), the plugin state kept current on every issuance and
// revocation, the device registry and its REST routes. Built and destroyed by main only.
#pragma once

#include <memory>

#include "context.hpp"
#include "pki_service.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

class DeviceRegistry;

class ControlChannel {
 public:
  virtual ~ControlChannel() = default;  // stops the registry, then the broker
  virtual std::string agent_url() const = 0;
  // The device registry (commands to agents); null when the control channel is disabled.
  virtual DeviceRegistry* registry() const = 0;
};

// Registers the control routes on `router` in every case ([broker] enabled = false included).
Expected<std::unique_ptr<ControlChannel>> StartControlChannel(Context& ctx, PkiService& pki,
                                                              http::Router& router);

}  // namespace torwart::server
