"""The technician's side of a tunnel in the CLI, against a real torwartd with its relay but no
agent online: `torwart connect` finds the grant (exit 3 and a hint without one), fetches and
reuses the grant certificate, listens and prints how to use the port (JSON lines with --json),
shows the relay's refusal ("gateway offline") per connection, closes on SIGINT/SIGTERM, at the
grant's end and on revocation, and runs --exec commands; `session list|kill` and
`device quarantine`. The full path through a real agent is tests/system/test_tunnel.py."""
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time

import pytest

from access_helpers import user_with_mfa
from conftest import TORWART, Server, admin_cli, free_port

POLICY = {
    "version": 1,
    "groups": {"maintenance": ["tech", "admin"]},
    "sites": {"werk": {"gateways": ["gw1"]}},
    "targets": {
        "plc": {"site": "werk", "gateway": "gw1", "address": "10.99.0.2:502", "protocol": "modbus"},
        "echo": {"site": "werk", "gateway": "gw1", "address": "10.99.0.2:7", "protocol": "tcp"},
        "ot-ssh": {"site": "werk", "gateway": "gw1", "address": "10.99.0.2:22", "protocol": "ssh"},
    },
    "rules": [
        {"id": "plc-read", "src": ["group:maintenance"], "dst": ["plc"], "scopes": ["modbus:read"],
         "max_duration": "2h"},
        {"id": "ot", "src": ["group:maintenance"], "dst": ["echo", "ot-ssh"], "max_duration": "2h"},
    ],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("connect")
    server = Server(tmp, ["--relay-listen", "127.0.0.1:0"]).start()
    try:
        admin = admin_cli(server, tmp)
        admin = user_with_mfa(admin, tmp, "admin", "admin")
        tech = user_with_mfa(admin, tmp, "tech", "technician")
        policy = tmp / "policy.json"
        policy.write_text(json.dumps(POLICY))
        admin.run("policy", "apply", policy)
        admin.run("device", "add", "gw1", "--site", "werk")
        yield server, admin, tech, tmp
    finally:
        server.stop()


def grant(cli, target, *args):
    r = cli.run("access", "request", target, "--reason", "cli test", *args, json_out=True)
    assert r["state"] == "active", r
    return r


class Connect:
    """`torwart connect` as a background process; stdout lines in a queue, stderr collected."""

    def __init__(self, cli, target, *extra, json_out=True):
        cmd = [str(TORWART), "--config-dir", str(cli.config_dir)]
        if json_out:
            cmd.append("--json")
        cmd += ["connect", target, *[str(e) for e in extra]]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.err = queue.Queue(), []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout=20):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def event(self, timeout=20):
        line = self.line(timeout)
        assert line is not None, "no event; stderr: " + self.stderr()
        return json.loads(line)

    def stderr(self):
        time.sleep(0.2)
        return "".join(self.err)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def refused_connection(port):
    """Connects to the local port and returns what arrives before the tunnel closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"hello")
        data = b""
        try:
            while True:
                chunk = s.recv(100)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_relay_is_announced(world):
    server, admin, _, _ = world
    p = subprocess.run(["curl", "-sf", "--cacert", server.ca,
                        server.url + "/.well-known/torwart/agent.json"],
                       capture_output=True, text=True, check=True)
    assert json.loads(p.stdout)["relay_url"].startswith("tls://")


def test_without_a_grant_exit_3_and_a_hint(world):
    _, _, tech, _ = world
    p = tech.run("connect", "werk/plc", check=False)
    assert p.returncode == 3, p.stderr
    assert "no active grant for werk/plc" in p.stderr
    assert "torwart access request werk/plc --reason" in p.stderr
    assert not p.stdout
    p = tech.run("connect", "not-a-target", check=False)
    assert p.returncode == 2 and "SITE/TARGET" in p.stderr


def test_listens_prints_usage_and_shows_the_relay_refusal(world):
    _, _, tech, _ = world
    g = grant(tech, "werk/plc", "--scope", "modbus:read", "--duration", "1h")
    c = Connect(tech, "werk/plc")
    try:
        ev = c.event()
        assert ev["event"] == "listening", ev
        port = ev["port"]
        assert port > 0 and ev["grant"] == g["id"] and ev["until"] == g["ends"]
        assert ev["host"] == "127.0.0.1" and ev["protocol"] == "modbus"
        assert ev["usage"] == f"mbpoll -m tcp -a 1 -r 1 -c 10 -t 4 -p {port} -1 127.0.0.1"
        # The grant certificate was made for this grant and kept in the config dir (0600 key).
        pem = tech.config_dir / "grants" / (g["id"] + ".pem")
        key = tech.config_dir / "grants" / (g["id"] + ".key")
        assert pem.exists() and key.stat().st_mode & 0o777 == 0o600
        text = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-ext", "subjectAltName"],
                              capture_output=True, text=True, check=True).stdout
        assert "urn:torwart:grant:" + g["id"] in text
        # No gateway online: the relay refuses the stream; the connection is closed, no bytes.
        assert refused_connection(port) == b""
        ev = c.event()
        assert ev["event"] == "end" and ev["error"] is True, ev
        assert "offline" in ev["reason"], ev
        # The listener survives a refused stream: a second connection is refused the same way.
        assert refused_connection(port) == b""
        assert c.event()["event"] == "end"
        c.proc.send_signal(signal.SIGTERM)
        assert c.wait(10) == 0
        last = c.event()
        assert last["event"] == "closed" and "SIGTERM" in last["reason"], last
    finally:
        c.stop()


def test_human_output_reuses_the_certificate_and_stops_on_sigint(world):
    _, _, tech, _ = world
    g = grant(tech, "werk/echo", "--duration", "1h")
    pem = tech.config_dir / "grants" / (g["id"] + ".pem")
    mtimes = []
    for _ in range(2):
        port = free_port()
        c = Connect(tech, "werk/echo", "--local-port", port, json_out=False)
        try:
            out = ""
            while "Ctrl-C" not in out:
                line = c.line()
                assert line is not None, out + c.stderr()
                out += line
            assert f"127.0.0.1:{port}" in out and g["id"] in out and "valid until" in out
            assert f"nc 127.0.0.1 {port}" in out  # a tcp target (protocol unknown to a technician)
            mtimes.append(pem.stat().st_mtime_ns)
            assert refused_connection(port) == b""
            deadline = time.time() + 10
            while "offline" not in "".join(c.err) and time.time() < deadline:
                time.sleep(0.1)
            assert "offline" in c.stderr()
            c.proc.send_signal(signal.SIGINT)
            assert c.wait(10) == 0
            assert "tunnel closed: stopped (SIGINT)" in c.stderr()
        finally:
            c.stop()
    assert mtimes[0] == mtimes[1]  # the second run reused the certificate


def test_protocol_from_the_policy_for_readers(world):
    _, admin, _, _ = world
    grant(admin, "werk/ot-ssh", "--duration", "1h")
    c = Connect(admin, "werk/ot-ssh")
    try:
        ev = c.event()
        assert ev["protocol"] == "ssh" and ev["usage"] == f"ssh -p {ev['port']} user@127.0.0.1"
    finally:
        c.proc.send_signal(signal.SIGTERM)
        c.wait(10)
        c.stop()


def test_exec_gets_the_port_and_returns_its_status(world):
    _, _, tech, tmp = world
    g = grant(tech, "werk/echo", "--duration", "1h")
    out = tmp / "exec.out"
    script = ("import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])),"
              " timeout=20); print('received', len(s.recv(10)))")
    cmd = (f"echo {{host}} {{port}} $TORWART_HOST $TORWART_PORT > {out}; "
           f"python3 -c \"{script}\" {{port}} >> {out}; exit 7")
    c = Connect(tech, "werk/echo", "--exec", cmd, "--grant", g["id"])
    try:
        ev = c.event()
        assert ev["event"] == "listening"
        assert c.wait(30) == 7, c.stderr()
        p = ev["port"]
        assert out.read_text().split("\n")[:2] == [f"127.0.0.1 {p} 127.0.0.1 {p}", "received 0"]
        events = []
        while (line := c.line(5)) is not None:
            events.append(json.loads(line))
        assert any(e["event"] == "end" and "offline" in e["reason"] for e in events), events
        assert events[-1] == {"event": "closed", "reason": "command ended with status 7", "exit": 7}
    finally:
        c.stop()


def test_concurrent_connects_for_one_grant_share_one_certificate(world):
    """Several `torwart connect` for one fresh grant at once: each fetches or reuses the grant
    certificate under a lock, so none ends up with a key that does not match its certificate."""
    _, _, tech, _ = world
    g = grant(tech, "werk/echo", "--duration", "1h")
    procs = [subprocess.Popen([str(TORWART), "--config-dir", str(tech.config_dir), "connect",
                               "werk/echo", "--grant", g["id"], "--exec", "exit 0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, out + err


def test_a_grant_for_another_target_is_refused(world):
    _, _, tech, _ = world
    g = grant(tech, "werk/plc", "--scope", "modbus:read", "--duration", "1h")
    p = tech.run("connect", "werk/echo", "--grant", g["id"], check=False)
    assert p.returncode == 2 and "is for werk/plc, not werk/echo" in p.stderr


def test_the_tunnel_closes_when_the_grant_ends(world):
    _, _, tech, _ = world
    # A fresh short grant ends last, so `connect` picks it... only for a target without others.
    g = grant(tech, "werk/ot-ssh", "--duration", "6s")
    c = Connect(tech, "werk/ot-ssh", "--grant", g["id"])
    try:
        assert c.event()["event"] == "listening"
        assert c.wait(15) == 4
        last = c.event()
        assert last == {"event": "closed", "reason": f"grant {g['id']} expired", "exit": 4}
    finally:
        c.stop()


def test_the_tunnel_closes_when_the_grant_is_revoked(world):
    _, _, tech, _ = world
    g = grant(tech, "werk/ot-ssh", "--duration", "1h")
    c = Connect(tech, "werk/ot-ssh", "--grant", g["id"])
    try:
        assert c.event()["event"] == "listening"
        tech.run("access", "revoke", g["id"], "--reason", "done")
        assert c.wait(25) == 4  # the grant is checked every 15 s
        last = c.event()
        assert last["event"] == "closed" and "revoked" in last["reason"], last
    finally:
        c.stop()
    p = tech.run("connect", "werk/ot-ssh", "--grant", g["id"], check=False)
    assert p.returncode == 3 and "is revoked" in p.stderr


def test_session_list_and_kill(world):
    _, admin, _, _ = world
    r = admin.run("session", "list", "--all", json_out=True)
    assert isinstance(r["tunnels"], list)
    r = admin.run("session", "list", "--json")  # --json also after the subcommand
    assert json.loads(r.stdout)["tunnels"] == [] or all(
        t["state"] == "live" for t in json.loads(r.stdout)["tunnels"])
    p = admin.run("session", "list")
    assert "No live tunnel streams." in p.stdout or "STATE" in p.stdout
    p = admin.run("session", "kill", "st-0123456789abcdef", "--reason", "test", check=False)
    assert p.returncode == 1 and "no tunnel stream st-0123456789abcdef" in p.stderr, p.stderr


def test_device_quarantine_toggles(world):
    _, admin, _, _ = world
    assert admin.run("device", "show", "gw1", json_out=True).get("quarantined", False) is False
    p = admin.run("device", "quarantine", "gw1", "--reason", "unpatched CVE")
    assert "in quarantine" in p.stdout
    assert admin.run("device", "show", "gw1", json_out=True)["quarantined"] is True
    assert "QUARANTINED" in admin.run("device", "show", "gw1").stdout
    r = admin.run("device", "quarantine", "gw1", "--release", json_out=True)
    assert r["quarantined"] is False
    assert admin.run("device", "show", "gw1", json_out=True)["quarantined"] is False
