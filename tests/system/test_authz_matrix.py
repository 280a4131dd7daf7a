"""The authorization matrix: every REST endpoint in api/openapi.yaml × every role (plus sessions
without a second factor, a user who must still change the one-time password, and no session at
all), compared against the explicit table below. Nothing may be allowed that the table does not
allow, and nothing the table allows may be refused.

The test fails when api/openapi.yaml lists a path+method that is not in TABLE (or TABLE lists one
that the API no longer has): whoever adds an endpoint adds its row here.

"Refused" means 401/403 with an authorization error code; "allowed" means any other answer
(the calls carry dummy bodies and names, so 400/404/409 are expected). 5xx is always a failure.
"""
import http.client
import json
import re
import ssl
from dataclasses import dataclass

import pytest
import yaml

from conftest import ROOT, UserCli

ROLES = ("admin", "operator", "approver", "technician", "auditor", "vendor")
ALL = frozenset(ROLES)
PUBLIC = "public"  # no bearer token needed: everyone gets past authorization
DEVICE = "device"  # authenticated by device credentials only: a person's token gets nothing


@dataclass(frozen=True)
class Rule:
    who: object                 # PUBLIC, DEVICE, or a frozenset of roles
    mfa: bool = False           # the session must have passed TOTP (remote-access paths)
    before_passwd: bool = False  # also for users who must still change their one-time password


def roles(*names):
    return frozenset(names)


TABLE = {
    # identity (users_api.cpp)
    ("POST", "/api/v1/auth/login"): Rule(PUBLIC),
    ("POST", "/api/v1/auth/logout"): Rule(ALL, before_passwd=True),
    ("POST", "/api/v1/auth/password"): Rule(ALL, before_passwd=True),
    ("GET", "/api/v1/me"): Rule(ALL, before_passwd=True),
    ("POST", "/api/v1/auth/mfa/enroll"): Rule(ALL),
    ("POST", "/api/v1/auth/mfa/confirm"): Rule(ALL),
    ("GET", "/api/v1/users"): Rule(roles("admin", "auditor")),
    ("POST", "/api/v1/users"): Rule(roles("admin")),
    ("GET", "/api/v1/users/{name}"): Rule(roles("admin", "auditor")),
    ("POST", "/api/v1/users/{name}/disable"): Rule(roles("admin")),
    ("POST", "/api/v1/users/{name}/enable"): Rule(roles("admin")),
    ("POST", "/api/v1/users/{name}/password-reset"): Rule(roles("admin")),
    ("POST", "/api/v1/users/{name}/mfa-reset"): Rule(roles("admin")),
    # devices (api.cpp)
    ("GET", "/api/v1/devices"): Rule(roles("admin", "operator", "approver", "auditor")),
    ("POST", "/api/v1/devices"): Rule(roles("admin", "operator")),
    ("GET", "/api/v1/devices/{name}"): Rule(roles("admin", "operator", "approver", "auditor")),
    ("POST", "/api/v1/devices/{name}/enrollment"): Rule(roles("admin", "operator")),
    ("POST", "/api/v1/devices/{name}/revoke"): Rule(roles("admin", "operator")),
    # control channel (device_registry.cpp)
    ("POST", "/api/v1/devices/{name}/ping"): Rule(roles("admin", "operator")),
    ("GET", "/.well-known/torwart/agent.json"): Rule(PUBLIC),  # where agents find the broker
    # tunnels (tunnel_service.cpp): ending a stream never needs TOTP; the handlers show and
    # kill only the caller's own streams unless admin/operator (list: also auditor, approver).
    ("GET", "/api/v1/tunnels"): Rule(ALL),
    ("POST", "/api/v1/tunnels/{id}/kill"): Rule(roles("admin", "operator", "approver",
                                                      "technician")),
    ("POST", "/api/v1/devices/{name}/quarantine"): Rule(roles("admin", "operator")),
    # audit (api.cpp, audit_api.cpp)
    ("GET", "/api/v1/audit"): Rule(roles("admin", "auditor")),
    ("GET", "/api/v1/audit/status"): Rule(roles("admin", "auditor")),
    ("GET", "/api/v1/audit/verify"): Rule(roles("admin", "auditor")),
    ("GET", "/api/v1/audit/export"): Rule(roles("admin", "auditor")),
    ("POST", "/api/v1/audit/checkpoint"): Rule(roles("admin")),
    ("POST", "/api/v1/audit/retention"): Rule(roles("admin")),
    ("GET", "/api/v1/audit/holds"): Rule(roles("admin", "auditor")),
    ("POST", "/api/v1/audit/holds"): Rule(roles("admin", "auditor")),
    ("DELETE", "/api/v1/audit/holds/{id}"): Rule(roles("admin", "auditor")),
    ("GET", "/api/v1/health"): Rule(PUBLIC),
    # reports (reports.cpp): monthly for admin/auditor; the Art. 15 report for everyone, but the
    # handler gives non-auditors only their own (no ?user= means the caller).
    ("GET", "/api/v1/reports/monthly"): Rule(roles("admin", "auditor")),
    ("GET", "/api/v1/reports/subject"): Rule(ALL),
    # policy (policy_api.cpp)
    ("POST", "/api/v1/policy/check"): Rule(roles("admin", "operator", "auditor")),
    ("PUT", "/api/v1/policy"): Rule(roles("admin", "operator")),
    ("GET", "/api/v1/policy"): Rule(roles("admin", "operator", "auditor", "approver")),
    ("GET", "/api/v1/policy/versions"): Rule(roles("admin", "operator", "auditor", "approver")),
    ("POST", "/api/v1/policy/versions/{n}/restore"): Rule(roles("admin", "operator")),
    ("POST", "/api/v1/policy/explain"): Rule(ALL),  # others' decisions: checked in the handler
    # just-in-time access (access_api.cpp): requesting, deciding and certificates need TOTP;
    # ending access never does.
    ("POST", "/api/v1/access"): Rule(roles("admin", "operator", "approver", "technician"),
                                     mfa=True),
    ("GET", "/api/v1/access"): Rule(ALL),  # the handler lists only what the caller may see
    ("GET", "/api/v1/access/{id}"): Rule(ALL),
    ("POST", "/api/v1/access/{id}/approve"): Rule(roles("admin", "operator", "approver"),
                                                  mfa=True),
    ("POST", "/api/v1/access/{id}/deny"): Rule(roles("admin", "operator", "approver"), mfa=True),
    ("POST", "/api/v1/access/{id}/revoke"): Rule(roles("admin", "operator", "approver",
                                                       "technician")),
    ("POST", "/api/v1/access/{id}/review"): Rule(roles("admin", "operator", "approver")),
    ("POST", "/api/v1/access/{id}/certificate"): Rule(roles("admin", "operator", "approver",
                                                            "technician"), mfa=True),
    # recordings (recordings.cpp): technicians see their own sessions' only (in the handler);
    # uploads are authenticated by the gateway's device certificate, never a person's token.
    ("GET", "/api/v1/recordings"): Rule(roles("admin", "auditor", "technician")),
    ("GET", "/api/v1/recordings/{id}"): Rule(roles("admin", "auditor", "technician")),
    ("PUT", "/api/v1/recordings/{id}"): Rule(DEVICE),
    # PKI for devices (pki_service.cpp)
    ("GET", "/pki/crl"): Rule(PUBLIC),
    ("GET", "/pki/ca"): Rule(PUBLIC),
    ("POST", "/.well-known/cmp"): Rule(PUBLIC),  # protected at message level (PBMAC/signature)
    ("POST", "/.well-known/cmp/p/{label}"): Rule(PUBLIC),
    ("GET", "/.well-known/est/cacerts"): Rule(PUBLIC),
    ("POST", "/.well-known/est/simpleenroll"): Rule(DEVICE),
    ("POST", "/.well-known/est/simplereenroll"): Rule(DEVICE),
}

METHODS = ("get", "post", "put", "patch", "delete")
DENIAL_CODES = {"unauthenticated", "permission_denied", "mfa_required",
                "password_change_required"}
TARGET_USER = "matrix-target"


def openapi_operations():
    spec = yaml.safe_load((ROOT / "api" / "openapi.yaml").read_text())
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops if m in METHODS}


def test_table_covers_every_endpoint_in_openapi():
    ops = openapi_operations()
    missing = sorted(ops - TABLE.keys())
    stale = sorted(TABLE.keys() - ops)
    assert not missing, f"endpoints without a row in TABLE (add them): {missing}"
    assert not stale, f"rows in TABLE for endpoints openapi.yaml no longer has: {stale}"


@dataclass
class Principal:
    label: str
    role: str | None   # None: anonymous
    token: str | None
    mfa: bool = False
    fresh: bool = False  # must still change the one-time password


def expected_allowed(rule: Rule, p: Principal) -> bool:
    if rule.who == PUBLIC:
        return True
    if rule.who == DEVICE or p.role is None:
        return False
    if p.role not in rule.who:
        return False
    if p.fresh and not rule.before_passwd:
        return False
    return p.mfa or not rule.mfa


def concrete(path: str) -> str:
    if path.startswith("/api/v1/users/{name}"):
        return path.replace("{name}", TARGET_USER)
    return re.sub(r"\{(\w+)\}", lambda m: f"matrix-{m.group(1)}", path)


def call(server, method, path, token):
    ctx = ssl.create_default_context(cafile=server.ca)
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    headers = {"accept": "application/json"}
    body = None
    if method in ("POST", "PUT", "PATCH"):
        body = "{}"
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    code = ""
    try:
        code = json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        pass
    return r.status, code


def is_refusal(rule: Rule, status: int, code: str) -> bool:
    if rule.who == DEVICE:
        return status in (401, 403)  # EST answers with its own (basic/TLS) challenge
    return status in (401, 403) and code in DENIAL_CODES


def test_every_endpoint_for_every_role(server, admin, make_user):
    principals = [Principal("anonymous", None, None)]
    for role in ROLES:
        cli = make_user(role)
        principals.append(Principal(role, role, cli.token(), mfa=True))
    # Sessions without a second factor: the bootstrap admin (as in every other test) and a
    # technician. They may do what their role allows, except remote access.
    admin_token = json.loads((admin.config_dir / "session.json").read_text())["token"]
    principals.append(Principal("admin-no-mfa", "admin", admin_token))
    principals.append(Principal("technician-no-mfa", "technician",
                                make_user("technician", mfa=False).token()))
    # An operator who has not changed the one-time password yet.
    otp = admin.run("user", "add", "fresh-op", "--role", "operator",
                    json_out=True)["one_time_password"]
    fresh = UserCli(server, admin.config_dir.parent / "cli-fresh", "fresh-op", "operator")
    fresh.login("fresh-op", otp)
    principals.append(Principal("operator-before-passwd", "operator", fresh.token(), fresh=True))
    admin.run("user", "add", TARGET_USER, "--role", "vendor")

    # Logout ends the session: call it last.
    order = sorted(TABLE, key=lambda k: k == ("POST", "/api/v1/auth/logout"))
    wrong = []
    calls = 0
    for p in principals:
        for method, path in order:
            rule = TABLE[(method, path)]
            status, code = call(server, method, concrete(path), p.token)
            calls += 1
            if status >= 500:
                wrong.append(f"{p.label:24} {method} {path}: server error {status} {code}")
                continue
            want = expected_allowed(rule, p)
            refused = is_refusal(rule, status, code)
            if want and refused:
                wrong.append(f"{p.label:24} {method} {path}: refused ({status} {code}), "
                             "table allows it")
            elif not want and not refused:
                wrong.append(f"{p.label:24} {method} {path}: ALLOWED ({status} {code}), "
                             "table refuses it")
    assert calls == len(principals) * len(TABLE)
    assert not wrong, "authorization matrix mismatches:\n" + "\n".join(wrong)
    assert server.alive()
