// Server profiles of one agent: each profile is an enrollment with its own torwartd, identity,
// key and state. "default" lives in the state directory itself (the layout of a single-server
// agent); others in <state_dir>/profiles/<name>/. The active one is named in
// <state_dir>/active-profile. Plain file operations; callers serialise writes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart::agent {

inline constexpr const char* kDefaultProfile = "default";

bool ValidProfileName(const std::string& name);
std::string ProfileDir(const std::string& state_dir, const std::string& name);
std::string ActiveProfile(const std::string& state_dir);
// Fails with kNotFound unless the profile is enrolled (has agent.json).
Expected<void> SetActiveProfile(const std::string& state_dir, const std::string& name);
// [{"name":..,"active":bool,"server":..,"device_id":..,"mqtt_url":..}] for enrolled profiles.
nlohmann::json ListProfiles(const std::string& state_dir);

}  // namespace torwart::agent
