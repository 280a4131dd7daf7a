#include "profiles.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "torwart/pki/x509.hpp"

namespace torwart::agent {
namespace fs = std::filesystem;
using nlohmann::json;

bool ValidProfileName(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         name.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") ==
             std::string::npos;
}

std::string ProfileDir(const std::string& state_dir, const std::string& name) {
  if (name.empty() || name == kDefaultProfile) return state_dir;
  return state_dir + "/profiles/" + name;
}

std::string ActiveProfile(const std::string& state_dir) {
  auto text = pki::ReadFile(state_dir + "/active-profile");
  if (!text) return kDefaultProfile;
  std::string name = *text;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return ValidProfileName(name) ? name : kDefaultProfile;
}

Expected<void> SetActiveProfile(const std::string& state_dir, const std::string& name) {
  if (!ValidProfileName(name)) return MakeError(Errc::kInvalidArgument, "invalid profile name");
  std::error_code ec;
  if (!fs::exists(ProfileDir(state_dir, name) + "/agent.json", ec)) {
    return MakeError(Errc::kNotFound, "profile \"" + name +
                                          "\" is not enrolled (torwart-agent enroll --profile " +
                                          name + " ...)");
  }
  return pki::WriteFileAtomic(state_dir + "/active-profile", name + "\n", fs::perms(0644));
}

json ListProfiles(const std::string& state_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (fs::exists(state_dir + "/agent.json", ec)) names.push_back(kDefaultProfile);
  for (auto& e : fs::directory_iterator(state_dir + "/profiles", ec)) {
    std::string n = e.path().filename().string();
    if (ValidProfileName(n) && n != kDefaultProfile && fs::exists(e.path() / "agent.json", ec)) {
      names.push_back(n);
    }
  }
  std::sort(names.begin() + (names.empty() || names[0] != kDefaultProfile ? 0 : 1), names.end());
  std::string active = ActiveProfile(state_dir);
  json out = json::array();
  for (auto& n : names) {
    json p{{"name", n}, {"active", n == active}};
    if (auto t = pki::ReadFile(ProfileDir(state_dir, n) + "/agent.json"); t) {
      json j = json::parse(*t, nullptr, false);
      if (j.is_object()) {
        p["server"] = j.value("server", "");
        p["device_id"] = j.value("device_id", "");
        p["mqtt_url"] = j.value("mqtt_url", "");
      }
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace torwart::agent
