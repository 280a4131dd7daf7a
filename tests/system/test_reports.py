"""Issue 6, acceptance 6: the monthly report and the Art. 15 report list exactly the sessions of a
scripted scenario. A real torwartd with its relay and broker, two gateways played by the fake
agent of test_tunnel_server.py (MQTT 5 + relay ACCEPT + inner TLS echo), two technicians playing
the technician side: tech-a opens 3 sessions at site-x (on a grant an approver approved) and 1 at
site-y, tech-b 1 at site-x; one attempt on a revoked grant is refused; the gateway reports a
refused Modbus write; site-y's gateway is quarantined and released. Then the reports (REST,
JSON and HTML, and the CLI) must list exactly those sessions - compared with GET
/api/v1/tunnels - and nothing else; another month is empty; and who may read what holds."""
import http.client
import json
import ssl
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import Server, admin_cli
from test_control_server import wait_for
from test_pki import cmp_ir
from test_tunnel_server import FakeAgent, api, connect, make_user, server_row

SITES = {"site-x": "gw-x", "site-y": "gw-y"}
POLICY = {
    "version": 1,
    "groups": {"maintenance": ["tech-a", "tech-b"], "plant-leads": ["boss"]},
    "sites": {site: {"gateways": [gw]} for site, gw in SITES.items()},
    "targets": {
        "plc-x": {"site": "site-x", "gateway": "gw-x", "address": "10.0.0.5:502",
                  "protocol": "modbus"},
        "plc-y": {"site": "site-y", "gateway": "gw-y", "address": "10.0.1.5:502",
                  "protocol": "modbus"},
    },
    "rules": [
        {"id": "x", "src": ["group:maintenance"], "dst": ["plc-x"], "max_duration": "1h",
         "approval": {"count": 1, "group": "plant-leads"}},
        {"id": "y", "src": ["group:maintenance"], "dst": ["plc-y"], "max_duration": "1h"},
    ],
}


def get(server, path, cli):
    """GET with the user's token: (status, body bytes, content type)."""
    ctx = ssl.create_default_context(cafile=server.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=60)
    token = json.loads((cli.config_dir / "session.json").read_text())["token"]
    try:
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("content-type", "")
    finally:
        conn.close()


def report(server, cli, path):
    status, body, ctype = get(server, path, cli)
    assert status == 200, (status, body[:300])
    assert ctype.startswith("application/json")
    return json.loads(body)


def month_of(rfc3339):
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).strftime("%Y-%m")


class World:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    server = Server(tmp).start()
    w = World()
    w.server, w.tmp, w.agents = server, tmp, {}
    try:
        w.admin = admin_cli(server, tmp)
        (tmp / "policy.json").write_text(json.dumps(POLICY))
        w.admin.run("policy", "apply", tmp / "policy.json")
        w.relay_port = json.loads((server.data_dir / "relay" / "port.json").read_text())["port"]
        for site, gw in SITES.items():
            dev = w.admin.run("device", "add", gw, "--site", site, json_out=True)
            _, key, cert = cmp_ir(server, tmp, dev["enrollment"]["reference"],
                                  dev["enrollment"]["secret"], name=gw)
            uuid = dev["id"]
            der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                                 capture_output=True, check=True).stdout
            w.agents[site] = (FakeAgent(server, uuid, cert, key).start(), der, uuid)
            wait_for(lambda g=gw: w.admin.run("device", "show", g, json_out=True)["online"],
                     what=f"{gw} online")
        w.tech_a = make_user(server, w.admin, tmp, "tech-a")
        w.tech_b = make_user(server, w.admin, tmp, "tech-b")
        w.boss = make_user(server, w.admin, tmp, "boss", role="approver")
        w.auditor = make_user(server, w.admin, tmp, "audit-1", role="auditor")
        yield w
    finally:
        for agent, _, _ in w.agents.values():
            try:
                agent.stop()
            except Exception:
                pass
        server.stop()


def grant(w, tech, target, approve=False):
    r = tech.run("access", "request", target, "--reason", f"{tech.name} works on {target}",
                 "--duration", "30m", json_out=True)
    if approve:
        assert r["state"] == "pending", r
        w.boss.run("access", "approve", r["id"], "--comment", "go ahead")
    out = w.tmp / "grants"
    c = tech.run("access", "cert", r["id"], "--out", out, json_out=True)
    return r["id"], Path(c["certificate"]), out / (r["id"] + ".key")


def session(w, site, cert, key, payload):
    """One paired stream through the relay, some bytes both ways, closed; returns its id."""
    agent, der, uuid = w.agents[site]
    t = connect(w, cert, key)
    assert t.reply.startswith("OK st-") and t.reply.endswith(" " + uuid), t.reply
    sid = t.reply.split()[1]
    t.pair(der)
    t.inner.send(payload)
    assert t.inner.recv() == b"echo:" + payload
    t.close()
    assert agent.streams[sid]["ended"].wait(10)
    server_row(w, sid)  # ended and recorded on the server
    return sid


@pytest.fixture(scope="module")
def scenario(world):
    w = world
    s = World()
    s.a_grant_x, cert, key = grant(w, w.tech_a, "site-x/plc-x", approve=True)
    s.a_x = [session(w, "site-x", cert, key, f"a-x-{i}".encode()) for i in range(3)]
    s.b_grant_x, cert_b, key_b = grant(w, w.tech_b, "site-x/plc-x", approve=True)
    s.b_x = [session(w, "site-x", cert_b, key_b, b"b-x")]
    s.a_grant_y, cert_y, key_y = grant(w, w.tech_a, "site-y/plc-y")
    s.a_y = [session(w, "site-y", cert_y, key_y, b"a-y")]

    # Refused: a revoked grant's certificate is turned away at the relay (no session).
    s.a_revoked, cert_r, key_r = grant(w, w.tech_a, "site-x/plc-x", approve=True)
    w.tech_a.run("access", "revoke", s.a_revoked, "--reason", "wrong machine")
    t = connect(w, cert_r, key_r)
    assert t.reply.startswith("ERR forbidden") and "revoked" in t.reply, t.reply
    t.close()

    # The gateway of site-x reports a Modbus write it refused in one of tech-a's sessions.
    agent_x, _, uuid_x = w.agents["site-x"]
    agent_x.c.publish(f"torwart/d/{uuid_x}/event", json.dumps({
        "v": 1, "type": "tunnel.request_refused", "ts": int(time.time()), "stream": s.a_x[0],
        "grant": s.a_grant_x, "user": "tech-a", "target": "plc-x",
        "detail": {"function": 6, "unit": 1, "transaction": 7,
                   "reason": "function 6 needs scope modbus:write"}}), qos=1).wait_for_publish(5)
    wait_for(lambda: w.server.db("SELECT seq FROM audit WHERE type = ?",
                                 "agent.tunnel.request_refused"),
             what="the refused Modbus request in the audit trail")

    # Site-y's gateway: quarantined and released.
    for on in (True, False):
        status, _ = api(w.server, "POST", "/api/v1/devices/gw-y/quarantine", w.admin,
                        {"on": on, "reason": "scripted"})
        assert status == 200

    # The server's own list of sessions is the reference.
    status, body = api(w.server, "GET", "/api/v1/tunnels?state=all", w.admin)
    assert status == 200
    s.rows = body["tunnels"]
    assert sorted(r["id"] for r in s.rows) == sorted(s.a_x + s.b_x + s.a_y)
    assert all(r["state"] == "ended" for r in s.rows)
    return s


def expected(rows, site=None, user=None):
    """{month: [ids]} of the server's sessions matching site/user."""
    out = {}
    for r in sorted(rows, key=lambda r: (r["opened"], r["id"])):
        if (site is None or r["site"] == site) and (user is None or r["user"] == user):
            out.setdefault(month_of(r["opened"]), []).append(r["id"])
    return out


def test_monthly_report_lists_exactly_the_sites_sessions(world, scenario):
    w, s = world, scenario
    for site, mine in (("site-x", s.a_x + s.b_x), ("site-y", s.a_y)):
        want = expected(s.rows, site=site)
        assert sorted(sum(want.values(), [])) == sorted(mine)
        for month, ids in want.items():
            r = report(w.server, w.auditor, f"/api/v1/reports/monthly?site={site}&month={month}")
            assert r["schema"] == "torwart.report.monthly/1" and r["site"] == site
            got = [x["id"] for x in r["sessions"]]
            # Same sessions; oldest first (the list's times have whole seconds, the order uses
            # microseconds, so within one second either order is right).
            assert sorted(got) == sorted(ids), (site, month)
            assert [x["opened"] for x in r["sessions"]] == sorted(x["opened"]
                                                                  for x in r["sessions"])
            assert r["totals"]["sessions"] == len(ids)
            rows = {x["id"]: x for x in s.rows}
            for x in r["sessions"]:
                row = rows[x["id"]]
                for k in ("user", "site", "target", "opened", "closed", "bytes_up", "bytes_down",
                          "end_reason", "device"):
                    assert x[k] == row[k], (k, x[k], row[k])
                assert x["grant_id"] == row["grant"] and x["grant"]["id"] == row["grant"]
                assert x["duration_seconds"] is not None and x["bytes_up"] > 0
                assert x["recording"] is None  # the fake agent uploads none
            assert r["evidence"]["audit_chain"]["ok"] is True
            assert r["period"]["time_zone"] == "UTC"

    # The rest assumes the scenario ran within one UTC month (it takes seconds; a run across
    # midnight at the end of a month checks only the month-independent parts above).
    months = {month_of(r["opened"]) for r in s.rows}
    if len(months) != 1:
        pytest.skip(f"the scenario straddled a month boundary: {sorted(months)}")
    month = months.pop()
    x = report(w.server, w.admin, f"/api/v1/reports/monthly?site=site-x&month={month}")
    g = {v["id"]: v for v in x["sessions"]}[s.a_x[0]]["grant"]
    assert g["id"] == s.a_grant_x and g["reason"] == "tech-a works on site-x/plc-x"
    assert [a["approver"] for a in g["approvals"]] == ["boss"]
    assert g["break_glass"] is False and g["state"] == "active"
    ev = x["audit_events"]
    refused = [e for e in ev["refused_streams"]["events"] if "revoked" in e["reason"]]
    assert refused and refused[0]["actor"] == "tech-a"
    assert ev["refused_modbus"]["count"] == 1
    assert ev["refused_modbus"]["events"][0]["details"]["detail"]["function"] == 6
    assert ev["refused_modbus"]["events"][0]["actor_device"] == "gw-x"
    assert ev["refused_modbus"]["events"][0]["target"] == s.a_x[0]  # the session it happened in
    assert ev["quarantines"]["count"] == 0
    y = report(w.server, w.admin, f"/api/v1/reports/monthly?site=site-y&month={month}")
    assert y["audit_events"]["quarantines"]["count"] == 2
    assert y["audit_events"]["refused_streams"]["count"] == 0
    assert y["audit_events"]["refused_modbus"]["count"] == 0
    ids_requests = {r["id"] for r in x["access_requests"]}
    assert {s.a_grant_x, s.b_grant_x, s.a_revoked} <= ids_requests
    assert s.a_grant_y not in ids_requests

    # Another month is empty.
    empty = report(w.server, w.auditor, "/api/v1/reports/monthly?site=site-x&month=2001-01")
    assert empty["sessions"] == [] and empty["totals"]["sessions"] == 0
    assert empty["access_requests"] == []


def test_html_report_carries_the_same_sessions_and_nothing_active(world, scenario):
    w, s = world, scenario
    for site, mine, others in (("site-x", s.a_x + s.b_x, s.a_y), ("site-y", s.a_y, s.a_x + s.b_x)):
        for month in expected(s.rows, site=site):
            base = f"/api/v1/reports/monthly?site={site}&month={month}"
            ids = [v["id"] for v in report(w.server, w.auditor, base)["sessions"]]
            status, body, ctype = get(w.server, base + "&format=html", w.auditor)
            assert status == 200 and ctype.startswith("text/html")
            html = body.decode()
            assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
            assert "<script" not in html.lower() and "href=" not in html
            assert [i for i in mine if i in html] == [i for i in mine if i in ids]
            assert not [i for i in others if i in html]
    status, body, _ = get(w.server, "/api/v1/reports/subject?user=tech-a&format=html", w.auditor)
    assert status == 200
    html = body.decode()
    assert all(i in html for i in s.a_x + s.a_y) and not any(i in html for i in s.b_x)


def test_subject_report_lists_exactly_the_persons_sessions_and_grants(world, scenario):
    w, s = world, scenario
    r = report(w.server, w.auditor, "/api/v1/reports/subject?user=tech-a")
    assert r["schema"] == "torwart.report.subject/1" and r["subject"] == "tech-a"
    want = sum(expected(s.rows, user="tech-a").values(), [])
    assert sorted(x["id"] for x in r["sessions"]) == sorted(want) == sorted(s.a_x + s.a_y)
    assert [g["id"] for g in r["access_requests"]] == [s.a_grant_x, s.a_grant_y, s.a_revoked]
    assert {p["reason"] for p in r["purposes"]} == {"tech-a works on site-x/plc-x",
                                                    "tech-a works on site-y/plc-y"}
    assert r["account"]["name"] == "tech-a" and r["account"]["mfa"] is True
    assert r["account"]["role"] == "technician"
    kinds = {(x["kind"], x["name"]) for x in r["recipients"]}
    assert {("site operator", "site-x"), ("site operator", "site-y"), ("approver", "boss")} <= kinds
    by_type = r["audit_events"]["by_type"]
    assert by_type["tunnel.open"] == 4 and by_type["tunnel.close"] == 4
    assert by_type["agent.tunnel.request_refused"] == 1  # named as the stream's user
    assert by_type.get("tunnel.refused", 0) >= 1
    # Nothing of tech-b: not their sessions, grants, or even their name.
    text = json.dumps(r)
    assert "tech-b" not in text
    assert not any(i in text for i in s.b_x) and s.b_grant_x not in text
    assert "argon2" not in text and "password_hash" not in text


def test_cli_report_commands(world, scenario):
    w, s = world, scenario
    month = month_of(s.rows[0]["opened"])
    j = w.auditor.run("report", "monthly", "--site", "site-x", "--month", month, json_out=True)
    api_ids = [v["id"] for v in report(w.server, w.auditor,
                                       f"/api/v1/reports/monthly?site=site-x&month={month}")
               ["sessions"]]
    assert [v["id"] for v in j["sessions"]] == api_ids and api_ids
    out = w.auditor.run("report", "monthly", "--site", "site-x", "--month", month).stdout
    assert "Monthly access report: site site-x" in out and all(i in out for i in api_ids)
    assert "audit trail verified intact" in out
    page = w.tmp / "x.html"
    w.auditor.run("report", "monthly", "--site", "site-x", "--month", month, "--html", page)
    assert all(i in page.read_text() for i in api_ids)

    # tech-a may read their own Art. 15 report, not tech-b's and no monthly report.
    mine = w.tech_a.run("report", "subject", json_out=True)
    assert sorted(v["id"] for v in mine["sessions"]) == sorted(s.a_x + s.a_y)
    p = w.tech_a.run("report", "subject", "tech-b", check=False)
    assert p.returncode == 3 and "only admins and auditors" in p.stderr
    p = w.tech_a.run("report", "monthly", "--site", "site-x", "--month", month, check=False)
    assert p.returncode == 3
    human = w.admin.run("report", "subject", "tech-b").stdout
    assert "Art. 15 report: tech-b" in human and s.b_x[0] in human

    # Every report handed out was recorded, with what was asked for.
    rows = w.server.db("SELECT actor, target, details FROM audit WHERE type = 'report.generated'")
    assert ("audit-1", "site-x") in {(a, t) for a, t, _ in rows}
    assert any(a == "tech-a" and t == "tech-a" and '"kind":"subject"' in d for a, t, d in rows)
    assert not any(a == "tech-a" and t == "tech-b" for a, t, _ in rows)  # refused: no report


def test_bad_parameters_are_refused_clearly(world, scenario):
    w = world
    for query, words in (("site=site-x&month=2026-13", "YYYY-MM"),
                         ("site=site-x", "YYYY-MM"),
                         ("month=2026-01", "site is required"),
                         ("site=site-x&month=2026-01&format=pdf", "json or html"),
                         ("site=a%2Fb&month=2026-01", "site name")):
        status, body, _ = get(w.server, "/api/v1/reports/monthly?" + query, w.auditor)
        assert status == 400 and words in json.loads(body)["error"]["message"], (query, body)
    status, body, _ = get(w.server, "/api/v1/reports/subject?user=nobody", w.auditor)
    assert status == 404
    assert w.server.alive()
