"""Issue 5, the gateway's side of tunnels: a real torwartd (CA, grants, grant certificates, CRL)
and a real torwart-agent, driven the way torwartd drives it — MQTT 5 commands (stream.open,
stream.kill, quarantine) on its cmd topic — with a stand-in relay that pairs the agent's leg and
runs the technician's inner TLS with a real grant certificate. Shows: a target not on the
agent's allowlist is refused even with a valid grant (6); consent off refuses, consent on allows,
`consent off` ends live streams that needed it (4); quarantine refuses and kills (4);
`sessions kill` ends streams within a second (4); the stream is cut at the grant's deadline with
torwartd stopped (3); a revoked or mismatching grant certificate is refused (CRL); every
decision is an event on torwart/d/<uuid>/event; recordings are uploaded store-and-forward.
The full path through torwartd's relay and `torwart connect` is the netns end-to-end test."""
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from access_helpers import realtime_policy, user_with_mfa
from conftest import AGENT, Server, admin_cli, free_port, run, wait_for
from test_pki import add_device

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

TECH = "techniker@it-service.example"
OWNER = "dr.mueller@praxis-mueller.example"
SITE = "praxis-mueller"
TARGET = "praxis-router"


def stream_id():
    return "st-" + secrets.token_hex(8)


# --- the world: torwartd, a grant certificate, a broker, the agent, a relay, a target ------------

class Broker:
    """Mosquitto with our CA: devices on a TLS listener (kept to their own topics, including the
    new event topic), the test as "server" on a loopback plain listener."""

    def __init__(self, server, tmp: Path):
        self.port, self.obs_port = free_port(), free_port()
        pki = server.data_dir / "pki"
        (tmp / "tun.acl").write_text(
            "pattern write torwart/d/%u/status\npattern write torwart/d/%u/inventory\n"
            "pattern write torwart/d/%u/health\npattern write torwart/d/%u/res\n"
            "pattern write torwart/d/%u/event\npattern read torwart/d/%u/cmd\n")
        (tmp / "tun.conf").write_text(
            f"per_listener_settings true\nuser root\npersistence false\nlog_dest none\n"
            f"listener {self.port} 127.0.0.1\ncafile {pki}/chain.pem\ncertfile {pki}/server.pem\n"
            f"keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
            f"tls_version tlsv1.3\nacl_file {tmp}/tun.acl\n"
            f"listener {self.obs_port} 127.0.0.1\nallow_anonymous true\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(tmp / "tun.conf")],
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", self.port)) == 0,
                 what="mosquitto")
        self.url = f"mqtts://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Control:
    """Plays torwartd on the control channel: commands with MQTT 5 request/response, and a log
    of the agent's events."""

    def __init__(self, port, device):
        self.device = device
        self.t = f"torwart/d/{device}/"
        self.responses = {}
        self.events = []
        self.lock = threading.Lock()
        self.c = paho.Client(client_id="ctl-" + secrets.token_hex(3), protocol=paho.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("torwart/#", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, m):
        with self.lock:
            if m.topic == self.t + "res":
                self.responses[bytes(m.properties.CorrelationData)] = json.loads(m.payload)
            elif m.topic == self.t + "event":
                self.events.append(json.loads(m.payload))

    def command(self, cmd, args, timeout=10):
        corr = secrets.token_bytes(8)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.t + "res"
        props.CorrelationData = corr
        self.c.publish(self.t + "cmd", json.dumps({"v": 1, "cmd": cmd, "args": args}), qos=1,
                       properties=props)
        return wait_for(lambda: self.responses.get(corr), timeout=timeout, what=f"answer to {cmd}")

    def event(self, pred, timeout=10, what="event"):
        def find():
            with self.lock:
                hits = [e for e in self.events if pred(e)]
            return hits[-1] if hits else None
        return wait_for(find, timeout=timeout, what=what)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


class Relay:
    """A stand-in for torwartd's relay: TLS with the server certificate, client certificate
    required; takes "TORWART/1 ACCEPT <stream>" legs and answers "OK <stream> <device>"."""

    def __init__(self, server):
        pki = server.data_dir / "pki"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(server.ca)
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.legs = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hello, args=(raw,), daemon=True).start()

    def _hello(self, raw):
        try:
            raw.settimeout(10)
            s = self.ctx.wrap_socket(raw, server_side=True)
            line = b""
            while not line.endswith(b"\n"):
                b = s.recv(1)
                if not b:
                    return
                line += b
            parts = line.decode().split()
            assert parts[:2] == ["TORWART/1", "ACCEPT"], line
            with self.lock:
                self.legs[parts[2]] = s
        except (OSError, AssertionError):
            raw.close()

    def leg(self, stream, timeout=10):
        return wait_for(lambda: self.legs.get(stream), timeout=timeout, what=f"agent leg {stream}")

    def stop(self):
        self.sock.close()


class Inner:
    """The technician's end of the inner TLS (client, grant certificate), over a relay leg."""

    def __init__(self, leg, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the agent is the system under test here
        ctx.load_cert_chain(str(cert), str(key))
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inb, self.outb, server_side=False)
        self.leg = leg

    def _flush(self):
        data = self.outb.read()
        if data:
            self.leg.sendall(data)

    def _fill(self):
        data = self.leg.recv(65536)
        if not data:
            self.inb.write_eof()
            return False
        self.inb.write(data)
        return True

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionError("closed during the handshake")

    def send(self, data: bytes):
        self.obj.write(data)
        self._flush()

    def recv(self, timeout=10):
        """Bytes, or b"" once the agent closed the stream."""
        self.leg.settimeout(timeout)
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                try:
                    if not self._fill():
                        return b""
                except (ConnectionError, ssl.SSLError, OSError):
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                return b""


class Echo:
    """The target on the OT side: echoes, prefixed, so bytes visibly went through it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                c.sendall(b"echo:" + d)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent-tunnels")
    server = Server(tmp).start()
    started = []
    try:
        admin = admin_cli(server, tmp)
        policy = tmp / "policy.jsonc"
        policy.write_text(realtime_policy())
        admin.run("policy", "apply", policy)
        tech = user_with_mfa(admin, tmp, TECH, "technician")
        owner = user_with_mfa(admin, tmp, OWNER, "approver")

        def grant(target, duration="1h"):
            r = tech.run("access", "request", f"{SITE}/{target}", "--reason", "router update",
                         "--duration", duration, json_out=True)
            owner.run("access", "approve", r["id"])
            c = tech.run("access", "cert", r["id"], "--out", tmp / "grants", json_out=True)
            return r["id"], Path(c["certificate"]), tmp / "grants" / (r["id"] + ".key")

        g_main = grant(TARGET)
        g_admin = grant("praxis-admin-pc")

        # The gateway: enrolled against torwartd, control channel on our broker.
        dev = add_device(admin, "gw-praxis")
        state = tmp / "agent"
        run([AGENT, "--state-dir", state, "enroll", "--server", server.url, "--ca", server.ca,
             "--ref", dev["enrollment"]["reference"], "--secret", dev["enrollment"]["secret"]])
        broker = Broker(server, tmp)
        started.append(broker.stop)
        ctl = Control(broker.obs_port, dev["id"])
        started.append(ctl.stop)
        relay = Relay(server)
        started.append(relay.stop)
        echo = Echo()
        site = tmp / "site.toml"
        log = tmp / "agent.log"
        proc = subprocess.Popen(
            [str(AGENT), "--state-dir", str(state), "--log-level", "debug", "run", "--mqtt-url",
             broker.url, "--site-config", str(site), "--keepalive", "5", "--backoff-cap", "2"],
            stdout=open(log, "a"), stderr=subprocess.STDOUT)
        started.append(lambda: (proc.poll() is None and proc.terminate(), proc.wait(15)))
        def pong():
            try:
                return ctl.command("ping", {}, timeout=2)
            except AssertionError:
                return None
        wait_for(pong, timeout=30, what="agent on the control channel")
        yield dict(server=server, admin=admin, tech=tech, owner=owner, grant=g_main,
                   admin_grant=g_admin, state=state, ctl=ctl, relay=relay, echo=echo, site=site,
                   log=log, proc=proc, device=dev["id"], tmp=tmp)
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception:
                pass
        server.stop()


def agent(w, *args, check=True):
    return run([AGENT, "--state-dir", w["state"], *args], check=check)


def write_site(w, consent=False, target=TARGET, extra=""):
    w["site"].write_text(
        f'[[target]]\nname = "{target}"\naddress = "127.0.0.1:{w["echo"].port}"\n'
        f'protocol = "https"\nsite = "{SITE}"\nconsent = {"true" if consent else "false"}\n'
        + extra)


def open_args(w, stream, grant=None, target=TARGET, **kw):
    gid = (grant or w["grant"])[0]
    a = {"stream": stream, "relay": f"127.0.0.1:{w['relay'].port}", "relay_name": "127.0.0.1",
         "grant": gid, "user": TECH, "site": SITE, "target": target, "scopes": [],
         "consent_required": False, "deadline": int(time.time()) + 3600}
    a.update(kw)
    return a


def open_stream(w, grant=None, **kw):
    """stream.open accepted, the agent's leg paired, the inner TLS up with the grant certificate,
    and one round trip to the target. Returns (stream id, Inner)."""
    g = grant or w["grant"]
    st = stream_id()
    r = w["ctl"].command("stream.open", open_args(w, st, grant=g, **kw))
    assert r["ok"] is True, r
    leg = w["relay"].leg(st)
    leg.sendall(f"OK {st} {w['device']}\n".encode())
    inner = Inner(leg, g[1], g[2])
    inner.handshake()
    inner.send(b"hello")
    assert inner.recv() == b"echo:hello", w["log"].read_text()[-3000:]
    return st, inner


def refused(w, code, **kw):
    st = stream_id()
    r = w["ctl"].command("stream.open", open_args(w, st, **kw))
    assert r["ok"] is False and r["code"] == code, r
    ev = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_refused" and e.get("stream") == st,
                        what="stream_refused event")
    assert ev["detail"]["code"] == code and ev["detail"]["reason"] == r["error"]
    assert ev["grant"] == kw.get("grant", w["grant"])[0] and ev["user"] == TECH
    return r["error"]


def closed_within(inner, seconds):
    t0 = time.monotonic()
    assert inner.recv(timeout=seconds + 5) == b""
    return time.monotonic() - t0


def sessions(w):
    return json.loads(agent(w, "sessions", "--json").stdout)


# --- the scenarios ----------------------------------------------------------------------------------

def test_target_not_on_the_allowlist_is_refused_even_with_a_valid_grant(world):
    w = world
    w["site"].unlink(missing_ok=True)
    msg = refused(w, "not_allowed")
    assert msg == f"target {TARGET} is not on this gateway's allowlist"
    write_site(w, target="some-other-target")  # re-read on every stream.open
    assert refused(w, "not_allowed") == msg
    # A broken site.toml allows nothing and says where it is broken.
    w["site"].write_text(f'[[target]]\nname = "{TARGET}"\naddres = "127.0.0.1:1"\n')
    msg = refused(w, "not_allowed")
    assert "site.toml:3" in msg and "unknown key" in msg
    st = json.loads(agent(w, "status", "--json").stdout)["tunnels"]
    assert "error" in st["site"]
    # The site must match when site.toml names it.
    write_site(w)
    assert "belongs to site" in refused(w, "not_allowed", site="another-site")
    assert w["echo"].connections == 0, "no byte reached the target"
    # Malformed commands are answered, not fatal.
    r = w["ctl"].command("stream.open", {"stream": "st-nope"})
    assert r["ok"] is False and r["code"] == "bad_request"


def test_consent_off_refuses_on_allows_and_off_ends_streams_that_needed_it(world):
    w = world
    write_site(w, consent=True)
    agent(w, "consent", "off")
    msg = refused(w, "consent")
    assert "torwart-agent consent on" in msg
    # Required by the grant (policy on_site_consent) even where site.toml does not ask for it.
    write_site(w, consent=False)
    refused(w, "consent", consent_required=True)
    write_site(w, consent=True)

    out = json.loads(agent(w, "consent", "on", "--for", "2h", "--json").stdout)
    assert out["on"] is True and out["agent_running"] is True
    assert out["until"] >= int(time.time()) + 7100
    w["ctl"].event(lambda e: e["type"] == "consent.changed" and e["detail"]["on"] is True,
                   what="consent.changed on")
    st_needs, inner_needs = open_stream(w)
    # A stream to a target that does not need consent survives `consent off`.
    write_site(w, consent=False)
    st_free, inner_free = open_stream(w)
    write_site(w, consent=True)
    listed = {s["id"]: s for s in sessions(w)}
    assert listed[st_needs]["needs_consent"] is True and listed[st_needs]["state"] == "live"
    assert listed[st_free]["needs_consent"] is False

    p = agent(w, "consent", "off")
    assert "1 live stream(s) that needed it ended" in p.stdout
    assert closed_within(inner_needs, 1) < 1.0
    end = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_end" and e["stream"] == st_needs,
                         what="stream_end")
    assert end["detail"]["reason"] == "killed: on-site consent withdrawn"
    assert end["detail"]["bytes_to_target"] == 5 and end["detail"]["bytes_from_target"] == 10
    w["ctl"].event(lambda e: e["type"] == "consent.changed" and e["detail"]["on"] is False,
                   what="consent.changed off")
    inner_free.send(b"still")
    assert inner_free.recv() == b"echo:still"
    refused(w, "consent")
    assert json.loads(agent(w, "consent", "status", "--json").stdout)["on"] is False
    agent(w, "sessions", "kill", "--all")
    assert inner_free.recv() == b""


def test_consent_input_file(world):
    w = world
    gpio = w["tmp"] / "gpio17-value"
    gpio.write_text("0\n")
    write_site(w, consent=True, extra=f'[consent]\ninput = "{gpio}"\n')
    agent(w, "consent", "off")
    refused(w, "consent")
    gpio.write_text("1\n")
    st, inner = open_stream(w)
    # The input drops: the agent notices within its 1 s check and ends the stream.
    gpio.write_text("0\n")
    assert closed_within(inner, 3) < 3
    w["ctl"].event(lambda e: e["type"] == "tunnel.stream_end" and e["stream"] == st,
                   what="stream_end after the input dropped")


def test_quarantine_refuses_and_kills(world):
    w = world
    write_site(w)
    st, inner = open_stream(w)
    r = w["ctl"].command("quarantine", {"on": True, "reason": "CVE-2026-0815"})
    assert r == {"v": 1, "ok": True, "result": {"on": True, "killed": 1}}
    assert closed_within(inner, 1) < 1.0
    q = json.loads((w["state"] / "quarantine.json").read_text())
    assert q["on"] is True and q["reason"] == "CVE-2026-0815"
    assert "CVE-2026-0815" in refused(w, "quarantined")
    w["ctl"].event(lambda e: e["type"] == "quarantine.changed" and e["detail"]["on"] is True,
                   what="quarantine.changed")
    status = json.loads(agent(w, "status", "--json").stdout)["tunnels"]
    assert status["quarantine"]["on"] is True
    assert "quarantine:  ON (CVE-2026-0815)" in agent(w, "status").stdout
    r = w["ctl"].command("quarantine", {"on": False})
    assert r["ok"] is True
    st, inner = open_stream(w)
    agent(w, "sessions", "kill", st)
    assert inner.recv() == b""


def test_sessions_kill_one_and_all(world):
    w = world
    write_site(w)
    a, inner_a = open_stream(w)
    b, inner_b = open_stream(w)
    c, inner_c = open_stream(w)
    table = agent(w, "sessions").stdout
    assert a in table and b in table and TARGET in table and TECH in table
    p = agent(w, "sessions", "kill", a)
    assert "1 stream(s) ended" in p.stdout
    assert closed_within(inner_a, 1) < 1.0
    inner_b.send(b"x")
    assert inner_b.recv() == b"echo:x", "the others live on"
    out = json.loads(agent(w, "sessions", "kill", "--all", "--json").stdout)
    assert out["killed"] == 2
    assert closed_within(inner_b, 1) < 1.0 and closed_within(inner_c, 1) < 1.0
    for s in (a, b, c):
        e = w["ctl"].event(lambda e, s=s: e["type"] == "tunnel.stream_end" and e["stream"] == s,
                           what="stream_end")
        assert e["detail"]["reason"] == "killed: on site (torwart-agent sessions kill)"
    assert sessions(w) == []
    p = agent(w, "sessions", "kill", a, check=False)
    assert p.returncode == 1 and "no live stream" in p.stderr
    # From the server: stream.kill by grant.
    d, inner_d = open_stream(w)
    r = w["ctl"].command("stream.kill", {"grant": w["grant"][0], "reason": "grant revoked"})
    assert r["ok"] and r["result"]["killed"] == 1
    assert closed_within(inner_d, 1) < 1.0
    e = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_end" and e["stream"] == d,
                       what="stream_end after stream.kill")
    assert e["detail"]["reason"] == "killed: grant revoked"


def test_max_streams_is_busy(world):
    w = world
    write_site(w, extra="[streams]\nmax_streams = 1\n")
    st, inner = open_stream(w)
    assert "max_streams = 1" in refused(w, "busy")
    agent(w, "sessions", "kill", st)
    write_site(w)


def test_idle_streams_end_after_the_site_timeout(world):
    w = world
    write_site(w, extra='[streams]\nidle_timeout = "2s"\n')
    st, inner = open_stream(w)
    t0 = time.monotonic()
    assert inner.recv(timeout=15) == b""
    assert time.monotonic() - t0 >= 1.5
    e = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_end" and e["stream"] == st,
                       what="stream_end idle")
    assert e["detail"]["reason"] == "idle"
    write_site(w)


def test_grant_certificate_must_match_and_not_be_revoked(world):
    w = world
    write_site(w, extra=f'[[target]]\nname = "praxis-admin-pc"\n'
                        f'address = "127.0.0.1:{w["echo"].port}"\n')

    def inner_refused(args_kw, grant, want):
        st = stream_id()
        r = w["ctl"].command("stream.open", open_args(w, st, grant=grant, **args_kw))
        assert r["ok"] is True, r  # allowlisted: the certificate decides
        leg = w["relay"].leg(st)
        leg.sendall(f"OK {st} {w['device']}\n".encode())
        inner = Inner(leg, grant[1], grant[2])
        try:
            inner.handshake()
            inner.send(b"hello")
            assert inner.recv() == b""
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        ev = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_refused" and e["stream"] == st,
                            what="grant refused")
        assert ev["detail"]["code"] == "not_allowed" and want in ev["detail"]["reason"], ev
        return ev

    before = w["echo"].connections
    # The praxis-router certificate presented for a stream to praxis-admin-pc.
    inner_refused({"target": "praxis-admin-pc"}, w["grant"], "for target praxis-router")
    # Revoked: the CRL (fetched before each stream.open) names it.
    gid = w["admin_grant"][0]
    w["tech"].run("access", "revoke", gid, "--reason", "done early")
    inner_refused({"target": "praxis-admin-pc"}, w["admin_grant"], "revoked")
    assert w["echo"].connections == before, "no byte reached the target"
    assert (w["state"] / "crl.der").exists(), "the CRL is cached for outages"


def test_recordings_are_kept_until_the_server_has_them(world):
    """Store and forward. torwartd accepts a recording only for a tunnel session its relay
    recorded (the stand-in relay here has none), so this shows the agent's side: the signed
    recording is written, offered with the device certificate (torwartd authenticated it and
    answered "no tunnel session") and kept for a retry. The accepted upload is shown by the
    netns end-to-end test (test_tunnel.py) through the real relay."""
    w = world
    write_site(w)
    st, inner = open_stream(w)
    inner.send(b"recorded bytes")
    assert inner.recv() == b"echo:recorded bytes"
    agent(w, "sessions", "kill", st)
    rec = w["state"] / "recordings" / (st + ".rec")
    assert rec.exists() and rec.stat().st_mode & 0o777 == 0o600
    assert (w["state"] / "recordings").stat().st_mode & 0o777 == 0o700

    def refused_upload():
        up = json.loads(agent(w, "status", "--json").stdout)["tunnels"]["recordings"]["upload"]
        return up if st in up.get("last_error", "") or "no tunnel session" in \
            up.get("last_error", "") else None
    up = wait_for(refused_upload, timeout=30, what="an upload attempt")
    assert "HTTP 404" in up["last_error"] and up["pending"] >= 1, up
    assert rec.exists() and not (w["state"] / "recordings" / (st + ".rec.uploaded")).exists()


def test_stream_cut_at_deadline_without_the_server(world):
    """Last: it stops torwartd. The deadline comes from the agent's own decision (min of the
    certificate, the extension and stream.open), the cut from the agent's own timer."""
    w = world
    write_site(w)
    deadline = int(time.time()) + 6
    st, inner = open_stream(w, deadline=deadline)
    w["server"].stop()
    assert not w["server"].alive()
    assert inner.recv(timeout=20) == b""
    cut = time.time()
    assert deadline - 0.2 <= cut <= deadline + 1.0, (deadline, cut)
    e = w["ctl"].event(lambda e: e["type"] == "tunnel.stream_end" and e["stream"] == st,
                       what="stream_end at the deadline")
    assert e["detail"]["reason"] == "grant expired"
    # And no new stream for a grant that has ended.
    r = w["ctl"].command("stream.open", open_args(w, stream_id(), deadline=int(time.time()) - 1))
    assert r["ok"] is False and r["code"] == "bad_request"
