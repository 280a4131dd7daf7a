"""torwartd basics: first start, one-time admin password, sessions, configuration errors,
file permissions, and `make run`'s script."""
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from conftest import ROOT, BUILD, TORWARTD, Cli, NEW_ADMIN_PASSWORD, free_port, run


def test_first_start_creates_ca_and_one_time_admin(server, tmp_path):
    pki = server.data_dir / "pki"
    for name in ["root.key", "issuing.key", "server.key", "cmp.key"]:
        mode = stat.S_IMODE((pki / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    run(["openssl", "verify", "-CAfile", pki / "root.pem", pki / "issuing.pem"])
    # ECDSA P-256 everywhere
    assert "prime256v1" in run(["openssl", "x509", "-in", pki / "root.pem", "-noout", "-text"]).stdout
    assert server.admin_password and len(server.admin_password) >= 16
    # The password is not in the log output.
    assert server.admin_password not in server.stderr_path.read_text()

    cli = Cli(server, tmp_path / "c")
    cli.login("admin", server.admin_password)
    session = tmp_path / "c" / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    # Before the change, everything else is refused.
    p = cli.run("device", "list", check=False)
    assert p.returncode != 0 and "passwd" in p.stderr
    # Too short a password is refused.
    p = cli.run("passwd", input=f"{server.admin_password}\nshort\n", check=False)
    assert p.returncode != 0 and "12" in p.stderr
    cli.run("passwd", input=f"{server.admin_password}\n{NEW_ADMIN_PASSWORD}\n")
    assert cli.run("device", "list", json_out=True) == {"devices": []}
    # The one-time password no longer works.
    other = Cli(server, tmp_path / "d")
    p = other.run("--server", server.url, "--ca", server.ca, "login", "--user", "admin",
                  "--password-stdin", input=server.admin_password + "\n", check=False)
    assert p.returncode != 0

    # A restart does not print a new password, and the data survives.
    server.stop()
    server.start()
    assert server.stdout_path.read_text().count("one-time password") == 1
    assert cli.run("whoami").returncode == 0


def test_lockout_after_failed_logins(make_server, tmp_path):
    s = make_server(config='[auth]\nmax_failed_logins = 3\nlockout = "30m"\n')
    cli = Cli(s, tmp_path / "c")
    for _ in range(3):
        p = cli.run("--server", s.url, "--ca", s.ca, "login", "--user", "admin", "--password-stdin",
                    input="wrong password!\n", check=False)
        assert p.returncode != 0
    p = cli.run("--server", s.url, "--ca", s.ca, "login", "--user", "admin", "--password-stdin",
                input=s.admin_password + "\n", check=False)
    assert p.returncode != 0 and "locked" in p.stderr
    assert s.db("SELECT COUNT(*) FROM audit WHERE type='auth.lockout'")[0][0] == 1


def test_config_errors_name_file_line_and_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nlisten = "127.0.0.1:0"\nlisen = 1\n[pki]\ndevice_lifetime = "forever"\n')
    p = run([TORWARTD, "--config", cfg, "--data-dir", tmp_path / "d"], check=False)
    assert p.returncode == 2
    assert f"{cfg}:3:1: unknown key 'server.lisen'" in p.stderr
    assert f"{cfg}:5:" in p.stderr and "pki.device_lifetime" in p.stderr


def test_help_is_helpful():
    for exe, words in [(TORWARTD, ["--data-dir", "--config"]),
                       (BUILD / "apps/torwart/torwart", ["login", "device", "audit"]),
                       (BUILD / "apps/torwart-agent/torwart-agent", ["enroll", "run", "status"])]:
        p = run([exe, "--help"])
        for w in words:
            assert w in p.stdout


def test_offline_root_export(server, tmp_path):
    server.stop()
    out = tmp_path / "offline-root.key"
    run([TORWARTD, "--data-dir", server.data_dir, "ca", "export-root-key", out])
    assert out.exists() and not (server.data_dir / "pki" / "root.key").exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    server.start()  # still serves and issues without the root key
    assert server.alive()


def test_make_run_script_prints_password_and_next_steps(tmp_path):
    """`make run` (scripts/run-demo) starts the server, the demo agent and a simulated PLC, and
    prints the steps; following them, a technician reads the PLC through a tunnel."""
    from access_helpers import totp
    plc_port = free_port()
    env = dict(os.environ, TORWART_DATA_DIR=str(tmp_path / "data"), TORWART_LISTEN="127.0.0.1:0",
               TORWART_BROKER_LISTEN="127.0.0.1:0", TORWART_RELAY_LISTEN="127.0.0.1:0",
               TORWART_PLC_LISTEN=f"127.0.0.1:{plc_port}")
    p = subprocess.Popen([str(ROOT / "scripts" / "run-demo"), str(BUILD)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    out = ""
    deadline = time.time() + 30
    try:
        while time.time() < deadline and "Off-the-shelf" not in out:
            line = p.stdout.readline()
            if not line:
                break
            out += line
        assert "one-time password" in out, out
        assert "torwart login --server https://127.0.0.1:" in out, out
        for step in ("policy apply api/examples/demo-policy.jsonc", "access request demo/plc-1",
                     "access approve", "connect demo/plc-1", "mbpoll -m tcp"):
            assert step in out, (step, out)
        assert "enrollment failed" not in out, out  # the demo agent enrolled

        # Follow the printed steps.
        ep = json.loads((tmp_path / "data" / "endpoint.json").read_text())
        otp = out.split("one-time password:")[1].split()[0]

        class S:  # what Cli needs of a server
            url, ca = ep["url"], ep["ca"]
        admin = Cli(S, tmp_path / "cli-admin")
        admin.login("admin", otp)
        admin.run("passwd", input=f"{otp}\n{NEW_ADMIN_PASSWORD}\n")
        admin.run("mfa", "confirm", totp(admin.run("mfa", "enroll", json_out=True)["secret"]))
        admin.run("policy", "apply", ROOT / "api" / "examples" / "demo-policy.jsonc")
        tech_otp = admin.run("user", "add", "tech", "--role", "technician",
                             json_out=True)["one_time_password"]
        tech = Cli(S, tmp_path / "cli-tech")
        tech.login("tech", tech_otp)
        tech.run("passwd", input=f"{tech_otp}\na technician password 42\n")
        tech.run("mfa", "confirm", totp(tech.run("mfa", "enroll", json_out=True)["secret"]))
        req = tech.run("access", "request", "demo/plc-1", "--scope", "modbus:read", "--reason",
                       "read counters", json_out=True)
        admin.run("access", "approve", req["id"])
        deadline = time.time() + 30
        while not admin.run("device", "show", "demo-gateway", json_out=True).get("online"):
            assert time.time() < deadline, "the demo agent did not come online"
            time.sleep(0.2)
        r = tech.run("connect", "demo/plc-1", "--exec",
                     "mbpoll -m tcp -a 1 -r 1 -c 4 -t 4 -1 -p {port} {host}")
        assert "[1]:" in r.stdout and "[4]:" in r.stdout, r.stdout + r.stderr
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
