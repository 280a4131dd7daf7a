// Just-in-time access: requests -> approvals (four eyes) -> time-limited grants, break-glass with
// mandatory review, revocation; and the REST endpoints /api/v1/access*. Decisions come from the
// active policy (PolicyService) at request time and again at approval. Every step is an audit
// event written before the change (fail closed). Times come from ctx.clock. Thread-safe:
// concurrent changes to one request are serialised by the store's revision check.
// See docs/design/access.md.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "context.hpp"
#include "policy_api.hpp"
#include "torwart/pki/grant_extension.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {

class Webhooks;
class PkiService;

struct Actor {
  std::string name;
  std::string role;
  std::string source;  // peer address, for the audit record
};

class AccessService {
 public:
  // `webhooks` may be null (no notifications). `on_revoke` (may be empty) is called after a grant
  // ends early, e.g. to revoke its certificates.
  AccessService(Context& ctx, PolicyService& policies, Webhooks* webhooks,
                std::function<void(const storage::AccessRequest&)> on_revoke = {})
      : ctx_(ctx), policies_(policies), webhooks_(webhooks), on_revoke_(std::move(on_revoke)) {}

  struct NewRequest {
    std::string site;
    std::string target;
    std::string scope;
    std::string reason;
    std::optional<std::chrono::seconds> duration;  // default: the rule's max_duration
    bool break_glass = false;
  };
  // kPermissionDenied with the policy's reason when the policy denies.
  Expected<storage::AccessRequest> Request(const Actor& a, const NewRequest& n);
  // `shorten`: the grant lasts at most this long from approval.
  Expected<storage::AccessRequest> Approve(const Actor& a, const std::string& id,
                                           std::optional<std::chrono::seconds> shorten,
                                           const std::string& comment);
  Expected<storage::AccessRequest> Deny(const Actor& a, const std::string& id,
                                        const std::string& reason);
  // Ends a grant (or withdraws a pending request) at once.
  Expected<storage::AccessRequest> Revoke(const Actor& a, const std::string& id,
                                          const std::string& reason);
  // The mandatory review of a break-glass grant, by its review group (never the requester).
  Expected<storage::AccessRequest> Review(const Actor& a, const std::string& id,
                                          const std::string& comment);

  Expected<storage::AccessRequest> Get(const Actor& a, const std::string& id);
  // filter: "", "mine", "pending", "active", "unreviewed".
  Expected<std::vector<storage::AccessRequest>> List(const Actor& a, const std::string& filter);

  // pending, denied, active, expired, revoked, or ended (the requester was disabled or removed).
  std::string State(const storage::AccessRequest& r);
  // The claims of a grant certificate for `a`'s own grant `id` if it is active now; else
  // kExpired / kRevoked / kFailedPrecondition. Audited.
  Expected<pki::GrantClaims> CertificateClaims(const Actor& a, const std::string& id);

  // Who may see every request (others see their own).
  static bool SeesAll(const std::string& role);

 private:
  Expected<void> AuditStep(const Actor& a, const std::string& type,
                           const storage::AccessRequest& r, audit::Result result,
                           const std::string& reason, nlohmann::json details);
  void Notify(const std::string& event, const storage::AccessRequest& r,
              std::vector<std::string> recipients);
  Expected<storage::AccessRequest> Load(const std::string& id);

  Context& ctx_;
  PolicyService& policies_;
  Webhooks* webhooks_;
  std::function<void(const storage::AccessRequest&)> on_revoke_;
};

nlohmann::json AccessJson(AccessService& svc, const storage::AccessRequest& r);

// /api/v1/access* (request, approve, deny, revoke, review, list, show, certificate).
void RegisterAccessApi(Context& ctx, AccessService& access, PkiService& pki,
                       http::Router& router);

}  // namespace torwart::server
