"""Identity end to end: TOTP enrolment and login with the real server and CLI, replay refusal,
lockout by wrong codes, user administration (organisation, disable/enable, password and MFA
reset), and that TOTP secrets are neither logged nor stored in clear."""
import base64

from conftest import Cli, totp_code


def audit_types(admin, **query):
    args = ["audit", "query"]
    for k, v in query.items():
        args += [f"--{k}", v]
    return [e["type"] for e in admin.run(*args, json_out=True)["events"]]


def login(cli, password, *extra, stdin_extra=""):
    return cli.run("--server", cli.server.url, "--ca", cli.server.ca, "login", "--user", cli.name,
                   "--password-stdin", *extra, input=password + "\n" + stdin_extra, check=False)


def test_enroll_confirm_and_log_in_with_a_code(server, admin, make_user):
    tech = make_user("technician", organisation="Service Partner GmbH")
    status = tech.run("mfa", "status", json_out=True)
    assert status == {"user": tech.name, "mfa_state": "active", "session_mfa": True}

    # Without a code the password alone is not enough, and no session is saved.
    tech.run("logout")
    p = login(tech, tech.password)
    assert p.returncode == 3 and "one-time code" in p.stderr, p.stderr
    assert tech.run("whoami", check=False).returncode != 0

    # The code as the second line of stdin.
    p = login(tech, tech.password, stdin_extra=tech.next_code() + "\n")
    assert p.returncode == 0, p.stderr
    assert "with second factor" in p.stdout
    me = tech.run("whoami", json_out=True)
    assert me["mfa"] is True and me["organisation"] == "Service Partner GmbH"

    # The same code again: refused (replay), although it is still inside its time window.
    used = totp_code(tech.totp_secret, tech.last_step)
    p = login(tech, tech.password, "--totp", used)
    assert p.returncode == 3 and "already used" in p.stderr, p.stderr
    p = login(tech, tech.password, "--totp", "000000" if used != "000000" else "111111")
    assert p.returncode == 3 and "wrong one-time code" in p.stderr

    # Enrolling again while active is refused; the secret is not shown twice.
    p = tech.run("mfa", "enroll", check=False)
    assert p.returncode != 0 and "mfa-reset" in p.stderr

    types = audit_types(admin, actor=tech.name)
    assert "auth.mfa_enroll" in types and "auth.mfa_confirm" in types
    events = admin.run("audit", "query", "--actor", tech.name, "--type", "auth.login",
                       json_out=True)["events"]
    reasons = [e["reason"] for e in events if e["result"] == "failure"]
    assert "second factor required" in reasons and "replayed TOTP code" in reasons
    assert "wrong TOTP code" in reasons
    assert any(e["details"].get("mfa") is True for e in events if e["result"] == "success")
    # The organisation travels with the user's audit records.
    assert all(e["organisation"] == "Service Partner GmbH" for e in events)


def test_totp_secret_is_not_logged_and_sealed_at_rest(server, admin, make_user):
    tech = make_user("technician")
    secret = tech.totp_secret
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    stored = server.db("SELECT sealed_secret FROM user_mfa")[0][0]
    assert stored.startswith("v1:")
    assert secret not in stored and base64.b64encode(raw).decode() not in stored
    for f in [server.stdout_path, server.stderr_path]:
        assert secret not in f.read_text()
    dump = "\n".join(str(r) for r in server.db("SELECT * FROM audit"))
    assert secret not in dump
    key = server.data_dir / "secrets.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and key.stat().st_size == 32

    # A restart keeps the factor working (the key is persistent).
    server.stop()
    server.start()
    assert tech.relogin().returncode == 0
    assert tech.run("whoami", json_out=True)["mfa"] is True


def test_ten_wrong_codes_lock_the_account(server, admin, make_user):
    tech = make_user("technician")
    good = tech.next_code()
    wrong = "000000" if good != "000000" else "111111"
    for i in range(10):
        p = login(tech, tech.password, "--totp", wrong)
        assert p.returncode == 3 and "wrong one-time code" in p.stderr, (i, p.stderr)
    # Locked: the right password and a fresh, right code are refused.
    p = login(tech, tech.password, "--totp", good)
    assert p.returncode == 3 and "locked" in p.stderr, p.stderr
    assert "auth.lockout" in audit_types(admin, target=tech.name)
    show = admin.run("user", "show", tech.name, json_out=True)
    assert "locked_until" in show
    # An admin can clear it; the unused code then works.
    admin.run("user", "enable", tech.name)
    p = login(tech, tech.password, "--totp", good)
    assert p.returncode == 0, p.stderr


def test_user_administration(server, admin, make_user, tmp_path):
    op = make_user("operator", mfa=False, organisation="Werk Nord")
    listed = {u["name"]: u for u in admin.run("user", "list", json_out=True)["users"]}
    assert listed[op.name]["organisation"] == "Werk Nord"
    assert listed[op.name]["mfa"] == "none"
    text = admin.run("user", "list").stdout
    assert "ORGANISATION" in text and "Werk Nord" in text
    show = admin.run("user", "show", op.name, json_out=True)
    assert show["role"] == "operator" and show["disabled"] is False
    assert admin.run("user", "show", "nobody", check=False).returncode != 0

    # Only admins administer users.
    for cmd in (["disable", "admin"], ["reset-password", "admin"], ["mfa-reset", "admin"],
                ["enable", op.name]):
        p = op.run("user", *cmd, check=False)
        assert p.returncode == 3 and "may not" in p.stderr, (cmd, p.stderr)
    # The admin cannot lock themselves out.
    assert admin.run("user", "disable", "admin", check=False).returncode != 0

    # Disable: the running session ends at once and logins are refused.
    assert op.run("whoami").returncode == 0
    admin.run("user", "disable", op.name)
    p = op.run("whoami", check=False)
    assert p.returncode == 3, p.stderr
    assert login(op, op.password).returncode == 3
    assert admin.run("user", "show", op.name, json_out=True)["disabled"] is True
    admin.run("user", "enable", op.name)
    assert login(op, op.password).returncode == 0

    # Password reset: a new one-time password, the old one and the session stop working.
    new_otp = admin.run("user", "reset-password", op.name, json_out=True)["one_time_password"]
    assert op.run("whoami", check=False).returncode == 3
    assert login(op, op.password).returncode == 3
    p = login(op, new_otp)
    assert p.returncode == 0 and "changed" in p.stdout
    assert op.run("device", "list", check=False).returncode == 3  # must change it first
    op.run("passwd", input=f"{new_otp}\n{op.password}\n")

    # MFA reset (lost phone): the factor is gone, sessions end, the user enrolls again.
    tech = make_user("technician")
    admin.run("user", "mfa-reset", tech.name)
    assert tech.run("whoami", check=False).returncode == 3
    assert admin.run("user", "show", tech.name, json_out=True)["mfa"] == "none"
    assert login(tech, tech.password).returncode == 0
    assert tech.run("whoami", json_out=True)["mfa"] is False

    types = audit_types(admin, category="user")
    for t in ["user.create", "user.disable", "user.enable", "user.password_reset",
              "user.mfa_reset"]:
        assert t in types, t
    created = admin.run("audit", "query", "--type", "user.create", "--target", op.name,
                        json_out=True)["events"]
    assert created[0]["details"]["organisation"] == "Werk Nord"


def test_existing_admin_without_mfa_keeps_working(server, admin):
    # Admin work that is not remote access does not need a second factor.
    assert admin.run("whoami", json_out=True)["mfa"] is False
    assert admin.run("device", "list", json_out=True) == {"devices": []}
    cli = Cli(server, server.tmp / "no-session")
    p = cli.run("--server", server.url, "--ca", server.ca, "mfa", "status", check=False)
    assert p.returncode == 2 and "login" in p.stderr
