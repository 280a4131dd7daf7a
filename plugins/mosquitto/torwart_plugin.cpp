// The torwart Mosquitto plugin (plugin API v5, C ABI): certificate -> device identity, per-device
// topics, and active disconnection of revoked or expired devices. Loaded once, globally
// (per_listener_settings false: Mosquitto 2.0.11 never sends MOSQ_EVT_TICK to per-listener
// plugins). torwartd is recognised by its pinned certificate, devices by their certificate.
// Runs on the broker's single main thread; nothing here is shared with other threads.
// See docs/design/control-channel.md.
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstring>
#include <ctime>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

extern "C" {
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
}

#include "plugin_state.hpp"

// The library is built with hidden visibility; only the plugin entry points are exported.
#define TORWART_PLUGIN_API extern "C" __attribute__((visibility("default")))

namespace {

using torwart::broker_plugin::State;

constexpr char kUriPrefix[] = "urn:torwart:device:";

struct Connected {
  const mosquitto* client = nullptr;
  std::string serial;
  int64_t not_after = 0;
};

struct Plugin {
  mosquitto_plugin_id_t* id = nullptr;
  std::string state_file;
  State state;
  bool state_loaded = false;
  // Identity of the state file last read: a rename gives a new inode.
  ino_t ino = 0;
  int64_t mtime_ns = -1;
  off_t size = -1;
  int64_t last_check_ms = 0;
  std::unordered_map<std::string, Connected> connected;  // by client id (== device UUID)
};

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

constexpr char kServerUser[] = "torwartd";

// Re-reads the state file if it changed. A file that cannot be parsed keeps the previous state
// (a torwartd bug must not open the broker); a missing file before the first load means nobody
// may connect.
void MaybeReload(Plugin& p, bool force) {
  struct stat st {};
  if (stat(p.state_file.c_str(), &st) != 0) {
    if (force || p.ino != 0) {
      mosquitto_log_printf(MOSQ_LOG_WARNING, "torwart: state file %s missing",
                           p.state_file.c_str());
    }
    p.ino = 0;
    return;
  }
  int64_t mt = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (!force && st.st_ino == p.ino && mt == p.mtime_ns && st.st_size == p.size) return;
  std::ifstream f(p.state_file, std::ios::binary);
  std::stringstream buf;
  buf << f.rdbuf();
  State next;
  std::string error;
  if (!f || !torwart::broker_plugin::ParseState(buf.str(), next, error)) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "torwart: ignoring state file %s: %s", p.state_file.c_str(),
                         error.empty() ? "unreadable" : error.c_str());
  } else {
    p.state = std::move(next);
    p.state_loaded = true;
    mosquitto_log_printf(MOSQ_LOG_INFO, "torwart: state loaded: %d certificate(s)",
                         static_cast<int>(p.state.certs.size()));
  }
  p.ino = st.st_ino;
  p.mtime_ns = mt;
  p.size = st.st_size;
}

std::string CommonName(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
  if (i < 0) return {};
  // Exactly one CN.
  if (X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0) return {};
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  if (!s) return {};
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

bool HasDeviceUri(X509* cert, const std::string& uuid) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return false;
  bool found = false;
  const std::string want = kUriPrefix + uuid;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_STRING* s = gn->d.uniformResourceIdentifier;
    std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                  static_cast<size_t>(ASN1_STRING_length(s)));
    if (v == want) found = true;
  }
  GENERAL_NAMES_free(names);
  return found;
}

std::string SerialOf(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  if (!bn) return {};
  char* hex = BN_bn2hex(bn);
  std::string out = hex ? torwart::broker_plugin::NormalizeSerial(hex) : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string Sha256Hex(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert, EVP_sha256(), md, &n) != 1) return {};
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

int64_t NotAfterUnix(X509* cert) {
  struct tm t {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) != 1) return 0;
  return static_cast<int64_t>(timegm(&t));
}

int Refuse(const Plugin&, const mosquitto* client, const char* why, const std::string& who) {
  const char* addr = mosquitto_client_address(client);
  mosquitto_log_printf(MOSQ_LOG_NOTICE, "torwart: refused %s from %s: %s",
                       who.empty() ? "client" : who.c_str(), addr ? addr : "?", why);
  return MOSQ_ERR_AUTH;
}

int OnBasicAuth(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  auto* ev = static_cast<mosquitto_evt_basic_auth*>(event_data);
  try {
    MaybeReload(p, false);
    X509* cert = static_cast<X509*>(mosquitto_client_certificate(ev->client));
    if (!cert) return Refuse(p, ev->client, "no client certificate", "");
    struct Free {
      X509* c;
      ~Free() { X509_free(c); }
    } guard{cert};
    const char* cid = mosquitto_client_id(ev->client);
    std::string client_id = cid ? cid : "";
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
      return Refuse(p, ev->client, "certificate expired", client_id);
    }
    if (p.state.server_fingerprints.count(Sha256Hex(cert))) {
      // torwartd's own (pinned) certificate: the privileged identity.
      return mosquitto_set_username(ev->client, kServerUser) == MOSQ_ERR_SUCCESS ? MOSQ_ERR_SUCCESS
                                                                                 : MOSQ_ERR_AUTH;
    }
    std::string uuid = CommonName(cert);
    if (!torwart::broker_plugin::IsLowerUuid(uuid) || !HasDeviceUri(cert, uuid)) {
      return Refuse(p, ev->client, "certificate is not a torwart device certificate", client_id);
    }
    std::string serial = SerialOf(cert);
    auto it = p.state.certs.find(serial);
    if (it == p.state.certs.end()) {
      return Refuse(p, ev->client, "certificate unknown or revoked", uuid);
    }
    if (it->second.uuid != uuid) return Refuse(p, ev->client, "certificate/device mismatch", uuid);
    int64_t not_after = std::min(it->second.not_after, NotAfterUnix(cert));
    if (not_after <= NowMs() / 1000) return Refuse(p, ev->client, "certificate expired", uuid);
    if (client_id != uuid) return Refuse(p, ev->client, "client id must be the device UUID", uuid);
    if (mosquitto_set_username(ev->client, uuid.c_str()) != MOSQ_ERR_SUCCESS) {
      return Refuse(p, ev->client, "cannot set username", uuid);
    }
    p.connected[uuid] = Connected{ev->client, serial, not_after};
    return MOSQ_ERR_SUCCESS;
  } catch (...) {
    return MOSQ_ERR_AUTH;  // fail closed; never let an exception into the broker
  }
}

int OnAclCheck(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  auto* ev = static_cast<mosquitto_evt_acl_check*>(event_data);
  (void)p;
  // Usernames are only ever set by OnBasicAuth: "torwartd" for the pinned certificate, the
  // device UUID otherwise (what the client sent is replaced).
  const char* u = mosquitto_client_username(ev->client);
  if (u && std::strcmp(u, kServerUser) == 0) return MOSQ_ERR_SUCCESS;
  const char* cid = mosquitto_client_id(ev->client);
  if (!u || !cid || std::strcmp(u, cid) != 0 || !ev->topic) return MOSQ_ERR_ACL_DENIED;
  return torwart::broker_plugin::DeviceMayAccess(u, ev->topic, ev->access) ? MOSQ_ERR_SUCCESS
                                                                           : MOSQ_ERR_ACL_DENIED;
}

int OnTick(int, void*, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  try {
    int64_t now_ms = NowMs();
    if (now_ms - p.last_check_ms < 250) return MOSQ_ERR_SUCCESS;
    p.last_check_ms = now_ms;
    MaybeReload(p, false);
    // Collect first, kick after: kicking runs our DISCONNECT callback, which edits the map.
    std::vector<std::pair<std::string, const char*>> kicks;
    for (auto it = p.connected.begin(); it != p.connected.end();) {
      auto found = p.state.certs.find(it->second.serial);
      const char* why = nullptr;
      if (found == p.state.certs.end() || found->second.uuid != it->first) {
        why = "certificate revoked";
      } else if (it->second.not_after <= now_ms / 1000) {
        why = "certificate expired";
      }
      if (why) {
        kicks.emplace_back(it->first, why);
        it = p.connected.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [id, why] : kicks) {
      mosquitto_log_printf(MOSQ_LOG_NOTICE, "torwart: disconnecting %s: %s", id.c_str(), why);
      // with_will: the server learns "offline" from the device's last will.
      mosquitto_kick_client_by_clientid(id.c_str(), true);
    }
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

int OnDisconnect(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  auto* ev = static_cast<mosquitto_evt_disconnect*>(event_data);
  const char* cid = mosquitto_client_id(ev->client);
  if (!cid) return MOSQ_ERR_SUCCESS;
  auto it = p.connected.find(cid);
  // Only the connection we recorded: a newer connection with the same id may have taken over.
  if (it != p.connected.end() && it->second.client == ev->client) p.connected.erase(it);
  return MOSQ_ERR_SUCCESS;
}

}  // namespace

TORWART_PLUGIN_API int mosquitto_plugin_version(int count, const int* versions) {
  for (int i = 0; i < count; ++i) {
    if (versions[i] == 5) return 5;
  }
  return -1;
}

TORWART_PLUGIN_API int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                                             struct mosquitto_opt* options, int option_count) {
  auto* p = new (std::nothrow) Plugin();
  if (!p) return MOSQ_ERR_NOMEM;
  p->id = identifier;
  for (int i = 0; i < option_count; ++i) {
    std::string k = options[i].key ? options[i].key : "";
    std::string v = options[i].value ? options[i].value : "";
    if (k == "state_file") {
      p->state_file = v;
    } else {
      mosquitto_log_printf(MOSQ_LOG_ERR, "torwart: unknown option plugin_opt_%s", k.c_str());
      delete p;
      return MOSQ_ERR_INVAL;
    }
  }
  if (p->state_file.empty()) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "torwart: plugin_opt_state_file is required");
    delete p;
    return MOSQ_ERR_INVAL;
  }
  MaybeReload(*p, true);
  *userdata = p;
  int rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr, p);
  if (rc == MOSQ_ERR_SUCCESS)
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr, p);
  if (rc == MOSQ_ERR_SUCCESS)
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, OnTick, nullptr, p);
  if (rc == MOSQ_ERR_SUCCESS)
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr, p);
  return rc;
}

TORWART_PLUGIN_API int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
  auto* p = static_cast<Plugin*>(userdata);
  if (p) {
    mosquitto_callback_unregister(p->id, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_TICK, OnTick, nullptr);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr);
  }
  delete p;
  return MOSQ_ERR_SUCCESS;
}
