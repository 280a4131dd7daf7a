"""Just-in-time access end to end: users created with `torwart user add`, logged in with a
second factor; requests decided by the policy, four eyes, shorten, revoke, grant certificates
(expired and revoked grants get none), break-glass with review, and signed webhooks with retry
(acceptance items 1, 3, 4 of issue 4). Real time: the policy variant has no windows."""
import json
import subprocess
import time

import pytest

from access_helpers import PASSWORD, Receiver, realtime_policy, user_with_mfa
from conftest import Cli, Server, admin_cli

SECRET = "webhook-secret-0123456789"

USERS = [
    ("anna@example.com", "technician"), ("ben@example.com", "technician"),
    ("clara@example.com", "technician"), ("max.wagner@werk.example", "technician"),
    ("lena.hoffmann@werk.example", "technician"), ("techniker@it-service.example", "technician"),
    ("petra.schulz@werk.example", "approver"), ("jonas.weber@werk.example", "approver"),
    ("dr.mueller@praxis-mueller.example", "approver"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    receiver = Receiver(SECRET, fail_first=1)
    config = f"""
[[webhooks]]
url = "{receiver.url}"
secret = "{SECRET}"
events = ["access.*"]
"""
    server = Server(tmp, config=config).start()
    try:
        admin = admin_cli(server, tmp)
        policy = tmp / "policy.jsonc"
        policy.write_text(realtime_policy())
        admin.run("policy", "apply", policy)
        users = {"admin": user_with_mfa(admin, tmp, "admin", "admin")}
        for name, role in USERS:
            users[name] = user_with_mfa(admin, tmp, name, role)
        yield server, users, receiver, tmp
    finally:
        server.stop()
        receiver.close()


def request(cli, target, *args, check=True):
    return cli.run("access", "request", target, *args, json_out=check, check=check)


def denied(cli, target, *args):
    p = cli.run("access", "request", target, *args, check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    return p.stderr


def test_requests_follow_the_seed_scenarios(world):
    server, u, _, _ = world
    g = request(u["anna@example.com"], "filiale-kiel/kasse-kiel-1", "--reason", "till frozen")
    assert g["state"] == "active" and g["rule"] == "stores-nord"
    assert request(u["ben@example.com"], "filiale-bremen/kasse-bremen-1", "--reason", "x")["state"] == "active"
    assert "denied" in denied(u["anna@example.com"], "filiale-muenchen/kasse-muenchen-1", "--reason", "x")
    denied(u["ben@example.com"], "filiale-stuttgart/kasse-stuttgart-1", "--reason", "x")
    assert request(u["clara@example.com"], "filiale-muenchen/kasse-muenchen-1", "--reason", "x")["state"] == "active"
    denied(u["clara@example.com"], "filiale-kiel/kasse-kiel-1", "--reason", "x")
    # Reason required by the rule.
    assert "reason" in denied(u["anna@example.com"], "filiale-kiel/kasse-kiel-1")
    # Healthcare: admin systems need the owner's approval; patient data never.
    t = request(u["techniker@it-service.example"], "praxis-mueller/praxis-admin-pc", "--reason", "backup")
    assert t["state"] == "pending" and t["approver_group"] == "praxis-inhaber"
    assert "no-patient-data-for-contractors" in denied(
        u["techniker@it-service.example"], "praxis-mueller/praxis-pvs-server", "--reason", "x")
    # Industry: only maintenance reaches the OT gateway (with a lead's approval).
    m = request(u["lena.hoffmann@werk.example"], "werk-hamburg/ot-gw-hh", "--reason", "patch")
    assert m["state"] == "pending" and m["rule"] == "ot-gateway-maintenance" and m["on_site_consent"]
    denied(u["anna@example.com"], "werk-hamburg/ot-gw-hh", "--reason", "x")
    denied(u["techniker@it-service.example"], "werk-hamburg/ot-gw-hh", "--reason", "x")
    # Technicians see their own requests only; approvers see the pending inbox.
    mine = u["anna@example.com"].run("access", "list", json_out=True)["requests"]
    assert {r["requester"] for r in mine} == {"anna@example.com"}
    inbox = u["dr.mueller@praxis-mueller.example"].run("access", "list", "--pending", json_out=True)
    assert t["id"] in [r["id"] for r in inbox["requests"]]
    # Every decision is in the audit trail with actor, reason and decision.
    events = u["admin"].run("audit", "query", "--type", "access.request", json_out=True)["events"]
    refused = [e for e in events if e["actor"] == "clara@example.com" and e["result"] == "denied"]
    assert refused and refused[0]["target"] == "filiale-kiel/kasse-kiel-1"


def test_four_eyes_and_two_approvals(world):
    _, u, _, _ = world
    r = request(u["max.wagner@werk.example"], "werk-hamburg/presse-1-plc", "--scope", "modbus:write",
                "--reason", "valve", "--duration", "1h")
    assert r["rule"] == "plc-write" and r["approvals_required"] == 2
    # Not the requester, not someone outside the approver group (even an admin).
    p = u["max.wagner@werk.example"].run("access", "approve", r["id"], check=False)
    assert p.returncode == 3
    p = u["admin"].run("access", "approve", r["id"], check=False)
    assert p.returncode == 3 and "approver group" in p.stderr
    one = u["petra.schulz@werk.example"].run("access", "approve", r["id"], json_out=True)
    assert one["state"] == "pending"
    p = u["petra.schulz@werk.example"].run("access", "approve", r["id"], check=False)
    assert p.returncode != 0  # the same eyes twice do not count
    two = u["jonas.weber@werk.example"].run("access", "approve", r["id"], json_out=True)
    assert two["state"] == "active" and two["scopes"] == ["modbus:write"]


def test_shorten_revoke_and_certificates_of_ended_grants(world):
    server, u, _, tmp = world
    tech, owner = u["techniker@it-service.example"], u["dr.mueller@praxis-mueller.example"]
    # Approved for 2h with --shorten 30m: the grant is 30 minutes from approval.
    r = request(tech, "praxis-mueller/praxis-router", "--reason", "firmware", "--duration", "2h")
    g = owner.run("access", "approve", r["id"], "--shorten", "30m", json_out=True)
    from datetime import datetime
    starts = datetime.fromisoformat(g["starts"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(g["ends"].replace("Z", "+00:00"))
    assert (ends - starts).total_seconds() == 1800
    # A certificate for the active grant; not-after = grant end; the extension names it.
    c = tech.run("access", "cert", r["id"], "--out", tmp / "certs", json_out=True)
    text = subprocess.run(["openssl", "x509", "-in", c["certificate"], "-noout", "-text", "-enddate"],
                          capture_output=True, text=True, check=True).stdout
    assert "urn:torwart:grant:" + r["id"] in text and "TLS Web Client Authentication" in text
    assert "2.25.78651378630191958022851039446016456102.2" in text
    assert ends.strftime("%b %e %H:%M:%S %Y") in text
    assert (tmp / "certs" / (r["id"] + ".key")).stat().st_mode & 0o777 == 0o600
    # Revoke ends it at once: no more certificates, and the issued one is on the CRL.
    tech.run("access", "revoke", r["id"], "--reason", "done")
    assert tech.run("access", "show", r["id"], json_out=True)["state"] == "revoked"
    p = tech.run("access", "cert", r["id"], "--out", tmp / "certs", check=False)
    assert p.returncode == 3 and "revoked" in p.stderr
    serial = subprocess.run(["openssl", "x509", "-in", c["certificate"], "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout.split("=")[1].strip()
    rows = server.db("SELECT status FROM certificates WHERE device_id = ?", "grant:" + r["id"])
    assert rows == [("revoked",)], serial
    # A short real grant expires: then no certificate.
    s = request(tech, "praxis-mueller/praxis-admin-pc", "--reason", "quick", "--duration", "4s")
    owner.run("access", "approve", s["id"])
    tech.run("access", "cert", s["id"], "--out", tmp / "certs")
    time.sleep(5)
    assert tech.run("access", "show", s["id"], json_out=True)["state"] == "expired"
    p = tech.run("access", "cert", s["id"], "--out", tmp / "certs", check=False)
    assert p.returncode == 3 and "expired" in p.stderr


def test_break_glass_is_immediate_alerted_and_reviewed(world):
    _, u, receiver, _ = world
    anna = u["anna@example.com"]
    denied(anna, "werk-hamburg/ot-gw-hh", "--reason", "fire")  # not without break-glass
    r = request(anna, "werk-hamburg/ot-gw-hh", "--reason", "fire", "--duration", "1h", "--break-glass")
    assert r["state"] == "active" and r["break_glass"] and r["review_group"] == "ot-leads"
    events = u["admin"].run("audit", "query", "--type", "access.break_glass", json_out=True)["events"]
    details = [e["details"] if isinstance(e["details"], dict) else json.loads(e["details"])
               for e in events if e["result"] == "success"]
    assert any(d.get("alert") for d in details)
    alert = receiver.wait_for(lambda e: e["event"] == "access.break_glass" and e["data"]["request"] == r["id"])
    assert set(alert[0]["data"]["recipients"]) == {"petra.schulz@werk.example", "jonas.weber@werk.example"}
    unreviewed = u["admin"].run("access", "list", "--unreviewed", json_out=True)["requests"]
    assert r["id"] in [x["id"] for x in unreviewed]
    assert anna.run("access", "review", r["id"], "--comment", "self", check=False).returncode != 0
    u["petra.schulz@werk.example"].run("access", "review", r["id"], "--comment", "justified")
    unreviewed = u["admin"].run("access", "list", "--unreviewed", json_out=True)["requests"]
    assert r["id"] not in [x["id"] for x in unreviewed]


def test_webhooks_are_signed_retried_and_reach_approvers_and_requester(world):
    _, u, receiver, _ = world
    r = request(u["techniker@it-service.example"], "praxis-mueller/praxis-admin-pc", "--reason", "printer")
    asked = receiver.wait_for(lambda e: e["event"] == "access.requested" and e["data"]["request"] == r["id"])
    assert asked[0]["data"]["recipients"] == ["dr.mueller@praxis-mueller.example"]
    u["dr.mueller@praxis-mueller.example"].run("access", "deny", r["id"], "--reason", "not today")
    told = receiver.wait_for(lambda e: e["event"] == "access.denied" and e["data"]["request"] == r["id"])
    assert told[0]["data"]["recipients"] == ["techniker@it-service.example"]
    assert told[0]["data"]["decision_reason"] == "not today"
    assert receiver.bad_signatures == 0 and receiver.fail_first == 0  # the 503 was retried


def test_access_paths_need_the_second_factor(world):
    server, u, _, tmp = world
    out = u["admin"].run("user", "add", "nomfa@example.com", "--role", "technician", json_out=True)
    cli = Cli(server, tmp / "cli-nomfa")
    cli.login("nomfa@example.com", out["one_time_password"])
    cli.run("passwd", input=f"{out['one_time_password']}\n{PASSWORD}\n")
    p = cli.run("access", "request", "filiale-kiel/kasse-kiel-1", "--reason", "x", check=False)
    assert p.returncode == 3 and "mfa" in (p.stdout + p.stderr).lower()
