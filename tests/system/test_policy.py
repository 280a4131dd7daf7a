"""The access policy through the real CLI and server: offline check, apply/refuse with every
error and its position (the previous version stays active), versions and restore, and explain
for the seed's examples (acceptance items 1, 2, 5, 6 of issue 4)."""
from access_helpers import EXAMPLE
from conftest import TORWART, run

INVALID = """{
  "version": 1,
  "colour": "blue",
  "groups": { "leads": ["petra"] },
  "rules": [ { "id": "r", "src": ["group:nobody"], "dst": ["*"] } ],
  "tests": [ { "user": "petra", "target": "nothing", "expect": "allow" } ],
}
"""


def test_check_works_offline_and_reports_every_error_with_its_position(tmp_path):
    ok = run([TORWART, "--config-dir", tmp_path / "none", "policy", "check", EXAMPLE])
    assert "OK" in ok.stdout and "tests passed" in ok.stdout
    bad = tmp_path / "bad.jsonc"
    bad.write_text(INVALID)
    p = run([TORWART, "--config-dir", tmp_path / "none", "policy", "check", bad], check=False)
    assert p.returncode == 1
    assert f"{bad}:3:3:" in p.stderr and "colour" in p.stderr          # unknown key
    assert f"{bad}:5:35:" in p.stderr and "nobody" in p.stderr         # dangling group
    assert ":6:" in p.stderr                                           # test names unknown target


def test_apply_refuses_invalid_policy_and_keeps_the_previous(admin, tmp_path):
    # Deny by default before any policy exists.
    p = admin.run("policy", "explain", "--user", "anna@example.com", "--target", "kasse-kiel-1",
                  check=False)
    assert p.returncode == 4 and "no access policy" in p.stdout
    admin.run("policy", "apply", EXAMPLE, "--comment", "first")
    bad = tmp_path / "bad.jsonc"
    bad.write_text(INVALID)
    p = admin.run("policy", "apply", bad, check=False)
    assert p.returncode == 1
    assert f"{bad}:3:3:" in p.stderr and f"{bad}:5:35:" in p.stderr
    assert "active policy is unchanged" in p.stderr
    # A policy whose own test fails is refused too.
    failing = tmp_path / "failing.jsonc"
    failing.write_text(EXAMPLE.read_text().replace(
        '"target": "kasse-muenchen-1", "expect": "deny"', '"target": "kasse-muenchen-1", "expect": "allow"'))
    p = admin.run("policy", "apply", failing, check=False)
    assert p.returncode == 1 and "test" in p.stderr
    shown = admin.run("policy", "show", json_out=True)
    assert shown["version"] == 1 and shown["text"] == EXAMPLE.read_text()
    # New version, list, restore.
    admin.run("policy", "apply", EXAMPLE, "--comment", "second")
    versions = admin.run("policy", "versions", json_out=True)["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["active"] and versions[1]["comment"] == "first"
    r = admin.run("policy", "restore", "1", json_out=True)
    assert r["version"] == 3
    assert admin.run("policy", "show", json_out=True)["version"] == 3
    # Every apply, refusal and restore is audited.
    types = [e["type"] for e in admin.run("audit", "query", "--type", "policy.", json_out=True)["events"]]
    assert types.count("policy.apply") == 4 and "policy.restore" in types


def explain(admin, user, target, at=None, *extra):
    args = ["policy", "explain", "--user", user, "--target", target, *extra]
    if at:
        args += ["--at", at]
    return admin.run(*args, json_out=True)


def test_explain_names_the_rule_or_what_is_missing_for_the_seed_examples(admin):
    admin.run("policy", "apply", EXAMPLE)
    closed = "2026-05-04T21:00:00+02:00"  # Monday evening: stores closed
    cases = [
        ("anna@example.com", "kasse-kiel-1", True, "stores-nord"),
        ("ben@example.com", "kasse-bremen-1", True, "stores-nord"),
        ("anna@example.com", "kasse-muenchen-1", False, None),
        ("ben@example.com", "kasse-stuttgart-1", False, None),
        ("clara@example.com", "kasse-muenchen-1", True, "stores-sued"),
        ("clara@example.com", "kasse-kiel-1", False, None),
        ("techniker@it-service.example", "praxis-admin-pc", True, "praxis-contractor"),
        ("techniker@it-service.example", "praxis-router", True, "praxis-contractor"),
        ("techniker@it-service.example", "praxis-pvs-server", False, "no-patient-data-for-contractors"),
        ("anna@example.com", "ot-gw-hh", False, None),
        ("techniker@it-service.example", "ot-gw-hh", False, None),
    ]
    for user, target, allow, rule in cases:
        d = explain(admin, user, target, closed)
        assert d["allow"] == allow, (user, target, d["text"])
        if rule:
            assert d["rule"] == rule, (user, target, d)
        if not allow:
            assert d["missing"], d
    # Only group maintenance reaches tag:ot-gateway; a member after hours is allowed.
    d = explain(admin, "lena.hoffmann@werk.example", "ot-gw-hh", "2026-03-31T05:30:00+02:00")
    assert d["allow"] and d["rule"] == "ot-gateway-maintenance"
    assert d["requirements"]["approvals"] == 1 and d["requirements"]["on_site_consent"]
    # Window across the DST switch (2026-03-29): 06:30 CEST is outside.
    d = explain(admin, "max.wagner@werk.example", "ot-gw-hh", "2026-03-31T06:30:00+02:00")
    assert not d["allow"] and d["cause"] == "window"
    assert "outside window 'ot-after-hours'" in d["missing"]
    # The store rule outside its window names the window as the missing requirement.
    d = explain(admin, "anna@example.com", "kasse-kiel-1", "2026-05-04T12:00:00+02:00")
    assert not d["allow"] and "store-closed" in d["missing"]
    # Too long a duration and a missing reason are named.
    d = explain(admin, "max.wagner@werk.example", "ot-gw-hh", "2026-03-31T05:30:00+02:00",
                "--duration", "3h")
    assert not d["allow"] and d["cause"] == "duration"
    # Plain text for people.
    p = admin.run("policy", "explain", "--user", "techniker@it-service.example", "--target",
                  "praxis-pvs-server", check=False)
    assert p.returncode == 4 and "no-patient-data-for-contractors" in p.stdout
