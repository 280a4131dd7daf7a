"""torwart-agent: enrollment with a file key and with a SoftHSM token (non-extractable), and a
running agent that keeps a valid 60-second certificate for five minutes."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AGENT, admin_cli, run

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def softhsm_env(tmp: Path):
    tokens = tmp / "tokens"
    tokens.mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    run(["softhsm2-util", "--init-token", "--free", "--label", "agent", "--pin", "1234",
         "--so-pin", "5678"], env=env)
    return env


def enroll(server, admin, name, state, key_store="file", env=None, extra=()):
    dev = admin.run("device", "add", name, "--site", "s1", json_out=True)
    run([AGENT, "--state-dir", state, *extra, "enroll", "--server", server.url, "--ca", server.ca,
         "--ref", dev["enrollment"]["reference"], "--secret", dev["enrollment"]["secret"],
         "--key-store", key_store], env=env)
    return dev


def cert_valid(state: Path, ca: str) -> bool:
    pem = state / "device.pem"
    if not pem.exists():
        return False
    ok = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-checkend", "0"],
                        capture_output=True).returncode == 0
    return ok and subprocess.run(["openssl", "verify", "-CAfile", ca, pem],
                                 capture_output=True).returncode == 0


def test_enroll_with_file_key(server, admin, tmp_path):
    state = tmp_path / "a"
    dev = enroll(server, admin, "gw-file", state)
    assert oct((state / "device.key").stat().st_mode & 0o777) == "0o600"
    st = run([AGENT, "--state-dir", state, "--json", "status"]).stdout
    assert dev["id"] in st and '"certificate_valid": true' in st
    assert cert_valid(state, server.ca)


def test_enroll_with_softhsm_key_is_not_extractable(server, admin, tmp_path):
    env = softhsm_env(tmp_path)
    state = tmp_path / "h"
    enroll(server, admin, "gw-hsm", state, "pkcs11:token=agent;object=device", env=env,
           extra=("--pin", "1234"))
    assert cert_valid(state, server.ca)
    assert not (state / "device.key").exists()
    # The private key exists on the token, sensitive and never extractable.
    objs = run(["pkcs11-tool", "--module", MODULE, "--login", "--pin", "1234", "--list-objects",
                "--type", "privkey"], env=env).stdout
    assert "device" in objs
    assert "never extractable" in objs and "sensitive" in objs, objs
    # And the token key renews (kur signed on the token).
    run([AGENT, "--state-dir", state, "--pin", "1234", "renew"], env=env)
    assert cert_valid(state, server.ca)


@pytest.mark.slow
def test_running_agents_hold_valid_60s_certificates_for_five_minutes(make_server, tmp_path):
    server = make_server("--device-lifetime", "60s")
    admin = admin_cli(server, tmp_path)
    env = softhsm_env(tmp_path)
    file_state, hsm_state = tmp_path / "file", tmp_path / "hsm"
    enroll(server, admin, "gw-renew-file", file_state)
    enroll(server, admin, "gw-renew-hsm", hsm_state, "pkcs11:token=agent;object=device", env=env,
           extra=("--pin", "1234"))
    agents = [subprocess.Popen([str(AGENT), "--state-dir", str(s), "--pin", "1234", "--log-level", "warn",
                                "run", "--backoff-cap", "5"], env=env, stderr=open(tmp_path / f"{s.name}.log", "w"))
              for s in (file_state, hsm_state)]
    try:
        serials = {file_state: set(), hsm_state: set()}
        deadline = time.time() + 300
        while time.time() < deadline:
            for s in serials:
                assert cert_valid(s, server.ca), f"{s.name}: certificate not valid at {time.ctime()}"
                serials[s].add(run(["openssl", "x509", "-in", s / "device.pem", "-noout", "-serial"]).stdout)
            assert all(a.poll() is None for a in agents)
            time.sleep(2)
        # 300 s at a 60 s lifetime renewed at ~2/3: at least 6 certificates each.
        for s, seen in serials.items():
            assert len(seen) >= 6, (s.name, len(seen))
    finally:
        for a in agents:
            a.terminate()
            a.wait(10)
    assert server.db("SELECT COUNT(*) FROM audit WHERE type='pki.cmp.kur' AND result='success'")[0][0] >= 12
