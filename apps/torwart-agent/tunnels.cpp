#include "tunnels.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "gateway_state.hpp"
#include "recordings.hpp"
#include "site_config.hpp"
#include "stream_decision.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/endpoint.hpp"
#include "torwart/tunnel/modbus_guard.hpp"
#include "torwart/tunnel/recording.hpp"

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kMaxOutbox = 10000;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json Ok(const json& result) { return json{{"v", 1}, {"ok", true}, {"result", result}}; }
json Err(const std::string& message, const std::string& code) {
  return json{{"v", 1}, {"ok", false}, {"error", message}, {"code", code}};
}

int64_t NowUnix() { return ToUnix(SystemClock::Instance().Now()); }

// What the manager knows of one stream from stream.open until its end.
struct StreamEntry {
  OpenRequest req;
  SiteTarget target;
  bool needs_consent = false;
  std::chrono::seconds idle_timeout{900};
  int64_t requested = 0;
  SteadyClock::time_point requested_at = SteadyClock::now();
  bool opened = false;          // handed to GatewayStreams
  bool kill_requested = false;  // killed before or while it was handed over
  std::string kill_reason;
  bool granted = false;  // the grant certificate was accepted
  TimePoint deadline{};
  std::unique_ptr<tunnel::RecordingWriter> pending_recorder;  // until make_recorder takes it
  pki::EvpPkeyPtr recorder_key;  // keeps the signing key alive for the recorder
};

// Forwards to the recording writer and tells the manager when the recording is finished (so it
// may be uploaded). Owns the writer and a reference to the signing key (destroyed after it).
class TrackedRecorder final : public tunnel::StreamRecorder {
 public:
  TrackedRecorder(std::unique_ptr<tunnel::RecordingWriter> w, pki::EvpPkeyPtr key,
                  std::function<void()> done)
      : key_(std::move(key)), w_(std::move(w)), done_(std::move(done)) {}
  ~TrackedRecorder() override {
    w_.reset();
    if (!finished_ && done_) done_();
  }
  void OnData(tunnel::Direction d, std::string_view data) override { w_->OnData(d, data); }
  void OnEvent(std::string_view type, std::string_view detail) override {
    w_->OnEvent(type, detail);
  }
  void Finish(std::string_view reason) override {
    if (finished_) return;
    finished_ = true;
    w_->Finish(reason);
    if (done_) done_();
  }

 private:
  pki::EvpPkeyPtr key_;
  std::unique_ptr<tunnel::RecordingWriter> w_;
  std::function<void()> done_;
  bool finished_ = false;
};

}  // namespace

struct TunnelManager::Impl {
  TunnelSettings s;
  std::string rec_dir, outbox_path, crl_path;
  std::unique_ptr<tunnel::GatewayStreams> gw;
  std::unique_ptr<RecordingUploader> uploader;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false, stopped = false, wake = false;
  std::map<std::string, std::shared_ptr<StreamEntry>> streams;
  std::set<std::string> recording;  // streams whose recording is still being written
  std::deque<std::string> opens;
  std::deque<std::string> outbox;
  uint64_t outbox_dropped = 0;
  std::shared_ptr<const RevocationList> crl;
  std::string crl_source, crl_error;
  TimePoint crl_loaded{};
  SteadyClock::time_point last_crl_ok{};  // when the last CRL was fetched from the server
  std::optional<bool> last_consent;
  std::mutex consent_mu;  // one consent evaluation (or change) at a time; taken before `mu`
  std::optional<QuarantineState> quarantine_override;  // if quarantine.json could not be written
  bool recording_full = false;
  uint64_t recording_used = 0, recording_pending = 0;
  std::thread worker;

  // --- events ------------------------------------------------------------------------------

  void Emit(const std::string& type, const OpenRequest* req, json detail) {
    json j{{"v", 1}, {"type", type}, {"ts", NowUnix()}};
    if (req) {
      j["stream"] = req->stream;
      j["grant"] = req->grant;
      j["user"] = req->user;
      j["target"] = req->target;
    }
    // torwartd takes texts of at most 1024 bytes (docs/design/control-channel.md).
    if (detail.contains("reason") && detail["reason"].is_string() &&
        detail["reason"].get_ref<const std::string&>().size() > 1000) {
      detail["reason"] = detail["reason"].get<std::string>().substr(0, 1000) + "…";
    }
    j["detail"] = std::move(detail);
    std::string line = Dump(j);
    std::lock_guard lock(mu);
    outbox.push_back(line);
    while (outbox.size() > kMaxOutbox) {
      outbox.pop_front();
      ++outbox_dropped;
    }
    int fd = ::open(outbox_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      line += "\n";
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    wake = true;
    cv.notify_all();
  }

  void LoadOutbox() {
    auto text = pki::ReadFile(outbox_path, 64 << 20);
    if (!text) return;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;  // a torn last line
      outbox.push_back(line);
      if (outbox.size() > kMaxOutbox) outbox.pop_front();
    }
  }

  // Writes the queue as it is now (under mu).
  void PersistOutboxLocked() {
    if (outbox.empty()) {
      ::unlink(outbox_path.c_str());
      return;
    }
    std::string all;
    for (const auto& l : outbox) all += l + "\n";
    (void)pki::WriteFileAtomic(outbox_path, all, fs::perms(0600));
  }

  void DrainOutbox() {
    if (!s.publish_event) return;
    bool changed = false;
    while (true) {
      std::string next;
      {
        std::lock_guard lock(mu);
        if (outbox.empty()) break;
        next = outbox.front();
      }
      if (auto r = s.publish_event(next); !r) break;
      std::lock_guard lock(mu);
      if (!outbox.empty() && outbox.front() == next) outbox.pop_front();
      changed = true;
    }
    if (changed) {
      std::lock_guard lock(mu);
      PersistOutboxLocked();
    }
  }

  // --- CRL -----------------------------------------------------------------------------------

  Expected<std::shared_ptr<const RevocationList>> ParseCrl(const std::string& der) {
    auto ca = pki::ReadFile(s.ca_file);
    if (!ca) return MakeError(ca.error());
    auto list = RevocationList::FromDer(der, *ca);
    if (!list) return MakeError(list.error());
    return std::make_shared<const RevocationList>(std::move(*list));
  }

  void LoadCachedCrl() {
    auto der = pki::ReadFile(crl_path, 64 << 20);
    if (!der) return;
    auto list = ParseCrl(*der);
    if (!list) {
      log::warn("cached CRL {}: {}", crl_path, list.error().message());
      return;
    }
    std::lock_guard lock(mu);
    if (!crl) {
      crl = *list;
      crl_source = "cache";
      crl_loaded = SystemClock::Instance().Now();
    }
  }

  // GET <server>/pki/crl (timeout crl_fetch_timeout); on failure the cached copy stays in use.
  // Skipped if a CRL was fetched after `fresh_after` (several stream.open at once share one).
  void RefreshCrl(std::optional<SteadyClock::time_point> fresh_after) {
    auto started = SteadyClock::now();
    {
      std::lock_guard lock(mu);
      if (crl && fresh_after && crl_source == "server" && last_crl_ok >= *fresh_after) return;
    }
    std::string err;
    if (!s.server.empty()) {
      http::ClientSettings cs;
      cs.base_url = s.server;
      cs.ca_file = s.ca_file;
      cs.timeout = s.crl_fetch_timeout;
      cs.max_response_bytes = 64 << 20;
      http::Client c(cs);
      auto r = c.Send("GET", "/pki/crl");
      if (r && r->status == 200) {
        auto list = ParseCrl(r->body);
        if (list) {
          if (auto w = pki::WriteFileAtomic(crl_path, r->body, fs::perms(0644)); !w) {
            log::warn("caching the CRL: {}", w.error().message());
          }
          std::lock_guard lock(mu);
          crl = *list;
          crl_source = "server";
          crl_error.clear();
          crl_loaded = SystemClock::Instance().Now();
          last_crl_ok = started;
          return;
        }
        err = "the server's CRL: " + list.error().message();
      } else {
        err = r ? "GET /pki/crl: HTTP " + std::to_string(r->status) : r.error().message();
      }
    } else {
      err = "no server URL";
    }
    bool have;
    {
      std::lock_guard lock(mu);
      crl_error = err;
      have = crl != nullptr;
    }
    if (!have) LoadCachedCrl();
    log::debug("CRL refresh failed ({}); using the {} copy", err, have ? "cached" : "no");
  }

  // --- recordings ----------------------------------------------------------------------------

  uint64_t Quota() {
    auto site = LoadSiteConfig(s.site_config);
    return site ? site->recording_quota : SiteConfig{}.recording_quota;
  }

  // Evicts uploaded recordings as needed; returns whether a new stream may start recording.
  bool RefreshQuota(uint64_t quota, bool kill_if_over) {
    std::set<std::string> live;
    {
      std::lock_guard lock(mu);
      live = recording;
    }
    auto files = ScanRecordings(rec_dir, live);
    auto plan = PlanEviction(files, quota, 1);
    ApplyEviction(rec_dir, plan);
    bool over = plan.used > quota;
    {
      std::lock_guard lock(mu);
      recording_full = plan.full;
      recording_used = plan.used;
      recording_pending = plan.pending;
    }
    if (over && kill_if_over && !live.empty() && gw) {
      log::error(
          "recordings use {} of a {} quota and none can be evicted (not uploaded): "
          "ending the live streams",
          FormatByteSize(plan.used), FormatByteSize(quota));
      gw->KillAll("recording quota exhausted (recordings not yet uploaded)");
    }
    return !plan.full;
  }

  void RecordingDone(const std::string& id) {
    {
      std::lock_guard lock(mu);
      recording.erase(id);
    }
    if (uploader) uploader->Wake();
  }

  // --- consent -------------------------------------------------------------------------------

  ConsentState CurrentConsent() {
    auto site = LoadSiteConfig(s.site_config);
    return ReadConsent(s.state_dir, site ? site->consent_input : "", NowUnix());
  }

  // Ends the live streams that needed consent when it is off. `audit`: always emit the event
  // (an explicit `consent on|off`), else only on a change (expiry, the input switched).
  json CheckConsent(bool audit) {
    std::lock_guard cl(consent_mu);
    return CheckConsentLocked(audit);
  }

  json CheckConsentLocked(bool audit) {
    ConsentState c = CurrentConsent();
    bool changed;
    {
      std::lock_guard lock(mu);
      changed = last_consent.has_value() && *last_consent != c.on;
      last_consent = c.on;
    }
    if (audit || changed) {
      json d{{"on", c.on}, {"until", c.until}, {"switch", c.switch_on}, {"input", c.input_on}};
      d["origin"] = audit ? "torwart-agent consent" : (c.on ? "input" : "expired or input off");
      Emit("consent.changed", nullptr, d);
      log::info("on-site consent is {}", c.on ? "on" : "off");
    }
    size_t killed = 0;
    if (!c.on) {
      std::vector<std::string> ids;
      {
        std::lock_guard lock(mu);
        for (auto& [id, e] : streams) {
          if (e->needs_consent) ids.push_back(id);
        }
      }
      for (const auto& id : ids) killed += Kill(id, "on-site consent withdrawn");
    }
    return json{{"on", c.on}, {"until", c.until}, {"killed", killed}};
  }

  // --- streams -------------------------------------------------------------------------------

  size_t Kill(const std::string& id, const std::string& reason) {
    bool pending = false;
    {
      std::lock_guard lock(mu);
      auto it = streams.find(id);
      if (it != streams.end()) {
        it->second->kill_requested = true;
        it->second->kill_reason = reason;
        pending = !it->second->opened;
      }
    }
    if (pending) return 1;  // the worker drops it instead of opening it
    return gw ? gw->Kill(id, reason) : 0;
  }

  size_t KillWhere(const std::function<bool(const StreamEntry&)>& pred, const std::string& reason) {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mu);
      for (auto& [id, e] : streams) {
        if (pred(*e)) ids.push_back(id);
      }
    }
    size_t n = 0;
    for (const auto& id : ids) n += Kill(id, reason);
    return n;
  }

  // Drops a stream that never reached GatewayStreams and reports its end.
  void Abandon(const std::shared_ptr<StreamEntry>& e, const std::string& reason) {
    {
      std::lock_guard lock(mu);
      streams.erase(e->req.stream);
    }
    Emit("tunnel.stream_end", &e->req,
         json{{"bytes_to_target", 0}, {"bytes_from_target", 0}, {"reason", reason}});
    log::info("stream {} ended before it started: {}", e->req.stream, reason);
  }

  void OpenStream(const std::string& id) {
    std::shared_ptr<StreamEntry> e;
    {
      std::lock_guard lock(mu);
      auto it = streams.find(id);
      if (it == streams.end()) return;
      e = it->second;
    }
    if (e->kill_requested) return Abandon(e, "killed: " + e->kill_reason);
    RefreshCrl(e->requested_at);  // revocation status as of the stream.open, at least
    auto key = s.key ? s.key() : Expected<pki::EvpPkeyPtr>(MakeError(Errc::kInternal, "no key"));
    if (!key) return Abandon(e, "device key: " + key.error().message());
    auto pem = pki::ReadFile(s.profile_dir + "/device.pem");
    if (!pem) return Abandon(e, "device certificate: " + pem.error().message());
    auto outer = tunnel::MakeOuterClientContext(*pem, key->get(), s.ca_file);
    if (!outer) return Abandon(e, "relay TLS context: " + outer.error().message());
    auto inner = tunnel::MakeInnerServerContext(*pem, key->get(), s.ca_file);
    if (!inner) return Abandon(e, "inner TLS context: " + inner.error().message());

    tunnel::GatewayStreamSettings gs;
    gs.stream_id = id;
    gs.relay_host = e->req.relay_host;
    gs.relay_port = e->req.relay_port;
    gs.outer = std::move(*outer);
    gs.inner = std::move(*inner);
    gs.target_host = e->target.host;
    gs.target_port = e->target.port;
    gs.idle_timeout = e->idle_timeout;

    tunnel::GatewayStreamHooks h;
    h.verify_grant = [this, id](const std::string& leaf) { return VerifyGrant(id, leaf); };
    std::string protocol = e->target.protocol;
    h.make_filter =
        [protocol](const tunnel::GrantCheck& g) -> std::unique_ptr<tunnel::StreamFilter> {
      if (protocol != "modbus") return nullptr;
      return tunnel::MakeModbusGuard(tunnel::ModbusPolicyFromScopes(g.scopes));
    };
    h.make_recorder = [this, id](const tunnel::GrantCheck&) { return TakeRecorder(id); };
    h.on_refused = [this, e](const std::string&, const tunnel::GrantCheck&,
                             const tunnel::Refusal& r) {
      Emit("tunnel.request_refused", &e->req,
           json{{"function", r.function},
                {"unit", r.unit},
                {"transaction", r.transaction},
                {"reason", r.reason}});
    };
    h.on_end = [this](const std::string& sid, const tunnel::StreamSummary& sum) {
      OnEnd(sid, sum);
    };
    {
      std::lock_guard lock(mu);
      if (e->kill_requested) {
        streams.erase(id);
      } else {
        e->opened = true;
      }
    }
    if (!e->opened) {
      Emit("tunnel.stream_end", &e->req,
           json{{"bytes_to_target", 0},
                {"bytes_from_target", 0},
                {"reason", "killed: " + e->kill_reason}});
      return;
    }
    auto r = gw->Open(std::move(gs), std::move(h));
    if (!r) return Abandon(e, r.error().message());
    log::info("stream {}: dialling the relay {}:{} for {} ({}), target {}", id, e->req.relay_host,
              e->req.relay_port, e->req.user, e->req.grant, e->req.target);
    bool late_kill;
    std::string why;
    {
      std::lock_guard lock(mu);
      late_kill = e->kill_requested;
      why = e->kill_reason;
    }
    if (late_kill) gw->Kill(id, why);
  }

  // Runs on the GatewayStreams I/O thread after the inner handshake: quick, no network.
  Expected<tunnel::GrantCheck> VerifyGrant(const std::string& id, const std::string& leaf_der) {
    std::shared_ptr<StreamEntry> e;
    std::shared_ptr<const RevocationList> list;
    bool full;
    {
      std::lock_guard lock(mu);
      auto it = streams.find(id);
      if (it == streams.end()) return MakeError(Errc::kNotFound, "stream " + id + " is unknown");
      e = it->second;
      list = crl;
      full = recording_full;
    }
    auto refuse = [&](const std::string& why, const char* code) -> Expected<tunnel::GrantCheck> {
      Emit("tunnel.stream_refused", &e->req, json{{"reason", why}, {"code", code}});
      log::warn("stream {} refused: {}", id, why);
      return MakeError(Errc::kPermissionDenied, why);
    };
    auto g = CheckGrantCertificate(leaf_der, e->req, list.get(), SystemClock::Instance().Now());
    if (!g) return refuse(g.error().message(), "not_allowed");
    if (full) return refuse("the recording quota is full of recordings not yet uploaded", "busy");
    // The recorder exists before a single byte reaches the target: no recording, no stream.
    auto key = s.key ? s.key() : Expected<pki::EvpPkeyPtr>(MakeError(Errc::kInternal, "no key"));
    if (!key) return refuse("cannot sign the recording: " + key.error().message(), "busy");
    pki::EvpPkeyPtr keyref = std::move(*key);
    tunnel::RecordingMeta meta;
    meta.stream_id = id;
    meta.grant_id = g->grant_id;
    meta.user = g->user;
    meta.device_id = s.device_id;
    meta.site = g->site;
    meta.target = g->target;
    meta.protocol = e->target.protocol;
    meta.scopes = g->scopes;
    meta.started_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          SystemClock::Instance().Now().time_since_epoch())
                          .count();
    auto w = tunnel::RecordingWriter::Create(RecordingPath(rec_dir, id), meta,
                                             tunnel::SignerFromKey(keyref.get()));
    if (!w) return refuse("cannot record the stream: " + w.error().message(), "busy");
    std::lock_guard lock(mu);
    e->pending_recorder = std::move(*w);
    e->recorder_key = std::move(keyref);
    e->granted = true;
    e->deadline = g->deadline;
    recording.insert(id);
    return g;
  }

  std::unique_ptr<tunnel::StreamRecorder> TakeRecorder(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = streams.find(id);
    if (it == streams.end() || !it->second->pending_recorder) return nullptr;
    return std::make_unique<TrackedRecorder>(std::move(it->second->pending_recorder),
                                             std::move(it->second->recorder_key),
                                             [this, id] { RecordingDone(id); });
  }

  void OnEnd(const std::string& id, const tunnel::StreamSummary& sum) {
    std::shared_ptr<StreamEntry> e;
    std::unique_ptr<tunnel::RecordingWriter> orphan;
    {
      std::lock_guard lock(mu);
      auto it = streams.find(id);
      if (it == streams.end()) return;
      e = it->second;
      streams.erase(it);
      orphan = std::move(e->pending_recorder);
    }
    if (orphan) {  // granted but never handed to the pump
      orphan->Finish(sum.reason);
      orphan.reset();
      RecordingDone(id);
    }
    Emit("tunnel.stream_end", &e->req,
         json{{"bytes_to_target", sum.bytes_to_target},
              {"bytes_from_target", sum.bytes_from_target},
              {"reason", sum.reason},
              {"target_connected", sum.target_connected}});
    log::info("stream {} ended: {} ({} bytes to the target, {} from it)", id, sum.reason,
              sum.bytes_to_target, sum.bytes_from_target);
    if (uploader) uploader->Wake();
  }

  // --- commands ------------------------------------------------------------------------------

  QuarantineState Quarantine() {
    {
      std::lock_guard lock(mu);
      if (quarantine_override) return *quarantine_override;
    }
    return ReadQuarantine(s.state_dir);
  }

  json StreamOpen(const json& args) {
    {
      std::lock_guard lock(mu);
      if (stop) return Err("the agent is stopping", "busy");
    }
    int64_t now = NowUnix();
    auto req = ParseStreamOpen(args, now);
    if (!req) {
      OpenRequest partial;
      for (auto [k, out] :
           {std::pair{"stream", &partial.stream}, std::pair{"grant", &partial.grant},
            std::pair{"user", &partial.user}, std::pair{"target", &partial.target}}) {
        if (args.is_object() && args.contains(k) && args[k].is_string()) {
          *out = args[k].get<std::string>().substr(0, 256);
        }
      }
      std::string why = "stream.open: " + req.error().message();
      // Reported only with a usable stream id; a malformed grant id is left out.
      if (IsStreamIdText(partial.stream)) {
        bool grant_ok = partial.grant.size() == 15 && partial.grant.rfind("ar-", 0) == 0 &&
                        partial.grant.find_first_not_of("0123456789abcdef", 3) == std::string::npos;
        if (!grant_ok) partial.grant.clear();
        if (partial.user.size() > 64) partial.user.clear();
        if (partial.target.size() > 128) partial.target.clear();
        Emit("tunnel.stream_refused", &partial, json{{"reason", why}, {"code", "bad_request"}});
      }
      log::warn("{}", why);
      return Err(why, "bad_request");
    }
    {
      std::lock_guard lock(mu);
      if (streams.contains(req->stream)) {
        return Err("stream " + req->stream + " is already known", "bad_request");
      }
    }
    auto site = LoadSiteConfig(s.site_config);
    DecisionInput in;
    if (site) {
      in.site = &*site;
    } else {
      in.site_error = site.error().message();
    }
    in.quarantine = Quarantine();
    in.consent = ReadConsent(s.state_dir, site ? site->consent_input : "", now);
    {
      std::lock_guard lock(mu);
      in.live_streams = streams.size();
    }
    in.recording_space = RefreshQuota(site ? site->recording_quota : Quota(), false);
    Decision d = DecideOpen(*req, in);
    if (!d.ok) {
      Emit("tunnel.stream_refused", &*req, json{{"reason", d.message}, {"code", d.code}});
      log::warn("stream {} for {} to {} refused ({}): {}", req->stream, req->user, req->target,
                d.code, d.message);
      return Err(d.message, d.code);
    }
    auto e = std::make_shared<StreamEntry>();
    e->req = *req;
    e->target = d.target;
    e->needs_consent = d.needs_consent;
    e->idle_timeout = site->idle_timeout;
    e->requested = now;
    {
      std::lock_guard lock(mu);
      streams[req->stream] = e;
      opens.push_back(req->stream);
      wake = true;
      cv.notify_all();
    }
    log::info("stream {} for {} ({}) to {} accepted", req->stream, req->user, req->grant,
              req->target);
    return Ok(json{{"stream", req->stream}, {"target", req->target}});
  }

  json StreamKill(const json& args) {
    if (!args.is_object()) return Err("args must be an object", "bad_request");
    std::string reason = "by the server";
    if (args.contains("reason")) {
      if (!args["reason"].is_string() || args["reason"].get_ref<const std::string&>().size() > 256)
        return Err("\"reason\" must be a string of at most 256 bytes", "bad_request");
      if (!args["reason"].get_ref<const std::string&>().empty())
        reason = args["reason"].get<std::string>();
    }
    const std::string& why = reason;  // GatewayStreams says "killed: <why>"
    size_t n = 0;
    if (args.contains("stream")) {
      if (!args["stream"].is_string() || !IsStreamIdText(args["stream"].get<std::string>()))
        return Err("\"stream\" must be a stream id", "bad_request");
      n = Kill(args["stream"].get<std::string>(), why);
    } else if (args.contains("grant")) {
      if (!args["grant"].is_string() || args["grant"].get_ref<const std::string&>().empty())
        return Err("\"grant\" must be a grant id", "bad_request");
      std::string g = args["grant"].get<std::string>();
      n = KillWhere([&](const StreamEntry& e) { return e.req.grant == g; }, why);
    } else if (args.contains("all") && args["all"].is_boolean() && args["all"].get<bool>()) {
      n = KillWhere([](const StreamEntry&) { return true; }, why);
    } else {
      return Err("stream.kill needs \"stream\", \"grant\" or \"all\":true", "bad_request");
    }
    log::info("stream.kill ({}): {} stream(s) ended", reason, n);
    return Ok(json{{"killed", n}});
  }

  json QuarantineCmd(const json& args) {
    if (!args.is_object() || !args.contains("on") || !args["on"].is_boolean())
      return Err("quarantine needs \"on\": true|false", "bad_request");
    QuarantineState q;
    q.on = args["on"].get<bool>();
    if (args.contains("reason")) {
      if (!args["reason"].is_string() || args["reason"].get_ref<const std::string&>().size() > 256)
        return Err("\"reason\" must be a string of at most 256 bytes", "bad_request");
      q.reason = args["reason"].get<std::string>();
    }
    q.since = NowUnix();
    auto w = WriteQuarantine(s.state_dir, q);
    {
      std::lock_guard lock(mu);
      if (w) {
        quarantine_override.reset();
      } else {
        quarantine_override = q;  // still enforced in memory
      }
    }
    size_t killed = 0;
    if (q.on) {
      killed = KillWhere([](const StreamEntry&) { return true; },
                         "quarantined" + (q.reason.empty() ? "" : " (" + q.reason + ")"));
    }
    Emit("quarantine.changed", nullptr,
         json{{"on", q.on}, {"reason", q.reason}, {"killed", killed}});
    log::warn("quarantine {} ({}); {} stream(s) ended", q.on ? "ON" : "off", q.reason, killed);
    if (!w) return Err("quarantine applied but not persisted: " + w.error().message(), "error");
    return Ok(json{{"on", q.on}, {"killed", killed}});
  }

  json SessionsJson() const {
    std::vector<tunnel::GatewayStreamInfo> live;
    if (gw) live = gw->List();
    std::map<std::string, const tunnel::GatewayStreamInfo*> by_id;
    for (const auto& l : live) by_id[l.stream_id] = &l;
    json out = json::array();
    std::lock_guard lock(mu);
    for (const auto& [id, e] : streams) {
      json j{{"id", id},
             {"grant", e->req.grant},
             {"user", e->req.user},
             {"site", e->req.site},
             {"target", e->req.target},
             {"protocol", e->target.protocol},
             {"address", e->target.host + ":" + std::to_string(e->target.port)},
             {"needs_consent", e->needs_consent},
             {"requested", e->requested},
             {"deadline", e->granted ? ToUnix(e->deadline) : e->req.deadline}};
      auto it = by_id.find(id);
      if (it != by_id.end()) {
        j["state"] = e->granted ? "live" : "connecting";
        j["opened"] = ToUnix(it->second->opened);
        j["bytes_to_target"] = it->second->bytes_to_target;
        j["bytes_from_target"] = it->second->bytes_from_target;
      } else {
        j["state"] = e->opened ? "connecting" : "opening";
      }
      out.push_back(j);
    }
    return out;
  }

  // --- the worker ----------------------------------------------------------------------------

  void Loop() {
    auto next_crl = SteadyClock::now();
    auto next_quota = SteadyClock::now();
    std::unique_lock lock(mu);
    while (!stop) {
      cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop || wake || !opens.empty(); });
      if (stop) break;
      wake = false;
      std::deque<std::string> jobs;
      jobs.swap(opens);
      lock.unlock();
      for (const auto& id : jobs) OpenStream(id);
      DrainOutbox();
      auto now = SteadyClock::now();
      if (now >= next_crl) {
        RefreshCrl(std::nullopt);
        next_crl = now + s.crl_interval;
      }
      CheckConsent(false);
      if (now >= next_quota) {
        RefreshQuota(Quota(), true);
        next_quota = now + std::chrono::seconds(5);
      }
      lock.lock();
    }
  }
};

TunnelManager::TunnelManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Expected<std::unique_ptr<TunnelManager>> TunnelManager::Create(TunnelSettings s) {
  auto impl = std::make_unique<Impl>();
  if (s.site_config.empty()) s.site_config = s.state_dir + "/site.toml";
  if (s.profile_dir.empty()) s.profile_dir = s.state_dir;
  impl->rec_dir = s.state_dir + "/recordings";
  impl->outbox_path = s.state_dir + "/events.outbox";
  impl->crl_path = s.profile_dir + "/crl.der";
  std::error_code ec;
  fs::create_directories(impl->rec_dir, ec);
  if (ec) return MakeError(Errc::kIo, "creating " + impl->rec_dir + ": " + ec.message());
  ::chmod(impl->rec_dir.c_str(), 0700);
  impl->s = std::move(s);
  impl->LoadOutbox();
  impl->LoadCachedCrl();
  auto gw = tunnel::GatewayStreams::Create();
  if (!gw) return MakeError(gw.error());
  impl->gw = std::move(*gw);
  impl->last_consent = impl->CurrentConsent().on;
  if (impl->s.upload_recordings && !impl->s.server.empty()) {
    UploaderSettings us;
    us.dir = impl->rec_dir;
    us.server = impl->s.server;
    us.ca_file = impl->s.ca_file;
    us.device_cert_file = impl->s.profile_dir + "/device.pem";
    us.key = impl->s.key;
    Impl* raw = impl.get();
    us.live = [raw] {
      std::lock_guard lock(raw->mu);
      return raw->recording;
    };
    impl->uploader = std::make_unique<RecordingUploader>(std::move(us));
    impl->uploader->Start();
  }
  Impl* raw = impl.get();
  impl->worker = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<TunnelManager>(new TunnelManager(std::move(impl)));
}

TunnelManager::~TunnelManager() { Stop(); }

void TunnelManager::Stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    if (m.stopped) return;
    m.stopped = true;
    m.stop = true;
    m.cv.notify_all();
  }
  if (m.worker.joinable()) m.worker.join();
  if (m.gw) {
    m.gw->KillAll("the agent is stopping");
    m.gw->Stop();
  }
  {
    // Streams that never reached the pump.
    std::vector<std::shared_ptr<StreamEntry>> left;
    {
      std::lock_guard lock(m.mu);
      for (auto& [id, e] : m.streams) left.push_back(e);
    }
    for (auto& e : left) m.Abandon(e, "killed: the agent is stopping");
  }
  m.DrainOutbox();
  if (m.uploader) m.uploader->Stop();
}

std::optional<nlohmann::json> TunnelManager::HandleCommand(const std::string& cmd,
                                                           const nlohmann::json& args) {
  if (cmd == "stream.open") return impl_->StreamOpen(args);
  if (cmd == "stream.kill") return impl_->StreamKill(args);
  if (cmd == "quarantine") return impl_->QuarantineCmd(args);
  return std::nullopt;
}

nlohmann::json TunnelManager::Sessions() const { return impl_->SessionsJson(); }

size_t TunnelManager::Kill(const std::string& stream_id, const std::string& reason) {
  return impl_->Kill(stream_id, reason);
}

size_t TunnelManager::KillAll(const std::string& reason) {
  return impl_->KillWhere([](const StreamEntry&) { return true; }, reason);
}

nlohmann::json TunnelManager::ConsentChanged() { return impl_->CheckConsent(true); }

Expected<nlohmann::json> TunnelManager::SetConsent(std::optional<int64_t> until) {
  std::lock_guard cl(impl_->consent_mu);
  auto w = until ? WriteConsentOn(impl_->s.state_dir, *until, NowUnix())
                 : WriteConsentOff(impl_->s.state_dir);
  if (!w) return MakeError(w.error());
  return impl_->CheckConsentLocked(true);
}

void TunnelManager::OnControlConnected() {
  std::lock_guard lock(impl_->mu);
  impl_->wake = true;
  impl_->cv.notify_all();
}

nlohmann::json TunnelManager::Status() const {
  Impl& m = *impl_;
  json j;
  j["streams"] = m.SessionsJson();
  QuarantineState q = m.Quarantine();
  j["quarantine"] = json{{"on", q.on}, {"reason", q.reason}, {"since", q.since}};
  ConsentState c = m.CurrentConsent();
  json cj{{"on", c.on}, {"until", c.until}, {"switch", c.switch_on}, {"input_on", c.input_on}};
  if (!c.input.empty()) cj["input"] = c.input;
  if (!c.problem.empty()) cj["problem"] = c.problem;
  j["consent"] = cj;
  auto site = LoadSiteConfig(m.s.site_config);
  if (site) {
    json targets = json::array();
    for (const auto& t : site->targets) targets.push_back(t.name);
    j["site"] = json{{"file", m.s.site_config},
                     {"present", site->present},
                     {"targets", targets},
                     {"max_streams", site->max_streams},
                     {"idle_timeout", site->idle_timeout.count()},
                     {"recording_quota", site->recording_quota}};
  } else {
    j["site"] = json{{"file", m.s.site_config}, {"error", site.error().message()}};
  }
  std::lock_guard lock(m.mu);
  json rec{{"dir", m.rec_dir},
           {"used", m.recording_used},
           {"not_uploaded", m.recording_pending},
           {"full", m.recording_full}};
  if (m.uploader) rec["upload"] = m.uploader->Status();
  j["recordings"] = rec;
  json cr{{"available", m.crl != nullptr}};
  if (m.crl) {
    cr["source"] = m.crl_source;
    cr["revoked"] = m.crl->size();
    cr["next_update"] = FormatRfc3339(m.crl->next_update());
    cr["loaded"] = FormatRfc3339(m.crl_loaded);
  }
  if (!m.crl_error.empty()) cr["last_error"] = m.crl_error;
  j["crl"] = cr;
  j["events_queued"] = m.outbox.size();
  if (m.outbox_dropped) j["events_dropped"] = m.outbox_dropped;
  return j;
}

}  // namespace torwart::agent
