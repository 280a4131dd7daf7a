"""Issue 3, server side of the control channel, against the real Mosquitto that torwartd runs
with the torwart plugin: topic isolation (4), revocation and expiry (5), broker restart (2),
garbage from devices (9), the registry and ping (1). Devices are played by the off-the-shelf
mosquitto_pub/mosquitto_sub and by paho-mqtt (MQTT 5 request/response)."""
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run, wait_for
from test_pki import add_device, cmp_ir

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


# --- helpers ---------------------------------------------------------------------------------

def ports(server):
    return json.loads((server.data_dir / "broker" / "ports.json").read_text())


def agent_json(server):
    ctx = ssl.create_default_context(cafile=server.ca)
    with urllib.request.urlopen(server.url + "/.well-known/torwart/agent.json", context=ctx,
                                timeout=10) as r:
        return json.loads(r.read())


def enroll(server, admin, tmp: Path, name):
    dev = add_device(admin, name)
    p, key, cert = cmp_ir(server, tmp, dev["enrollment"]["reference"], dev["enrollment"]["secret"],
                          name=name)
    assert cert.exists(), p.stderr
    return dev["id"], cert, key


def server_identity(server):
    d = server.data_dir / "broker"
    return d / "client.pem", d / "client.key"


def clients_args(server, cert, key, client_id, port):
    return ["-h", "127.0.0.1", "-p", str(port), "--cafile", server.ca, "--cert", cert, "--key", key,
            "-i", client_id, "-V", "mqttv5"]


class Peer:
    """An MQTT 5 client (paho) with a certificate: a device or the privileged spy."""

    def __init__(self, server, cert, key, client_id, port, will_topic=None, respond=False):
        self.messages = []
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.disconnected_at = None
        self.connect_rc = None
        self.respond = respond
        c = paho.Client(client_id=client_id, protocol=paho.MQTTv5)
        c.tls_set(ca_certs=str(server.ca), certfile=str(cert), keyfile=str(key))
        c.reconnect_delay_set(1, 2)
        if will_topic:
            c.will_set(will_topic, json.dumps({"v": 1, "state": "offline"}), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.c = c
        self.port = port

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connect_rc = rc
        if rc == 0:
            self.disconnected_at = None
            self.connected.set()
        else:
            self.refused.set()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        if self.connected.is_set() and self.disconnected_at is None:
            self.disconnected_at = time.time()
        self.connected.clear()

    def _on_message(self, client, userdata, msg):
        self.messages.append((msg.topic, msg.payload, msg.retain))
        if self.respond and msg.topic.endswith("/cmd"):
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            body = json.loads(msg.payload)
            out = {"v": 1, "ok": True, "result": {"pong": True}} if body.get("cmd") == "ping" else \
                {"v": 1, "ok": False, "error": "unknown command"}
            client.publish(msg.properties.ResponseTopic, json.dumps(out), qos=1, properties=props)

    def start(self, wait=True):
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=10)
        except (ssl.SSLError, OSError):
            self.refused.set()
            return self
        self.c.loop_start()
        if wait:
            assert self.connected.wait(15), f"could not connect (rc {self.connect_rc})"
        return self

    def stop(self):
        self.c.loop_stop()
        try:
            self.c.disconnect()
        except Exception:
            pass

    def publish(self, topic, payload, retain=False):
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)


def broker_exits(server):
    return server.db("SELECT details FROM audit WHERE type = 'broker.exit'")


def status(uuid, state="online"):
    return json.dumps({"v": 1, "state": state, "agent_version": "test", "ts": int(time.time())})


@pytest.fixture
def fleet(server, admin, tmp_path):
    """Devices A and B enrolled; the privileged spy subscribed to everything."""
    a = enroll(server, admin, tmp_path, "dev-a")
    b = enroll(server, admin, tmp_path, "dev-b")
    cert, key = server_identity(server)
    spy = Peer(server, cert, key, "spy", ports(server)["server"]).start()
    spy.c.subscribe("#", qos=1)
    time.sleep(0.3)
    yield a, b, spy
    spy.stop()
    # Nothing a device did may have crashed the broker (a crash would also "disconnect" it).
    if "restarted" not in os.environ.get("PYTEST_CURRENT_TEST", ""):
        assert broker_exits(server) == []


# --- tests -----------------------------------------------------------------------------------

def test_agent_json_names_the_managed_broker(server):
    j = agent_json(server)
    assert j["v"] == 1
    assert j["mqtt_url"] == f"mqtts://127.0.0.1:{ports(server)['device']}"
    conf = (server.data_dir / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "tls_version tlsv1.3" in conf


def test_device_topics_are_isolated(server, admin, fleet, tmp_path):
    """Acceptance 4: with A's certificate, mosquitto_pub/_sub cannot write to or read from B's
    topics nor anything of the server's; A's own topics work (positive control)."""
    (a_id, a_cert, a_key), (b_id, _, _), spy = fleet
    dport = ports(server)["device"]
    A = clients_args(server, a_cert, a_key, a_id, dport)

    # Writes: only A's own four topics reach anyone.
    own = f"torwart/d/{a_id}/status"
    forbidden = [f"torwart/d/{b_id}/{leaf}" for leaf in ("status", "inventory", "health", "res", "cmd")]
    forbidden += [f"torwart/d/{a_id}/cmd", "torwart/server/x", f"torwart/d/{a_id}/status/x", "x/y"]
    for t in forbidden + [own]:
        run(["mosquitto_pub", *A, "-q", "1", "-t", t, "-m", status(a_id)], check=False)
    wait_for(lambda: any(t == own for t, _, _ in spy.messages), what="A's own status at the spy")
    time.sleep(0.5)
    seen = {t for t, _, _ in spy.messages}
    assert not (seen & set(forbidden)), seen & set(forbidden)

    # Reads: A subscribes to B's command topic, wildcards and $SYS while the server publishes
    # to B; nothing arrives. Its own command topic works.
    def sub(topic):
        return subprocess.Popen(["mosquitto_sub", *A, "-q", "1", "-t", topic, "-v", "-W", "4"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    subs = {t: sub(t) for t in (f"torwart/d/{b_id}/cmd", "torwart/d/+/cmd", "#",
                                f"torwart/d/{b_id}/status", "$SYS/#")}
    time.sleep(1.0)
    for _ in range(3):
        spy.publish(f"torwart/d/{b_id}/cmd", '{"v":1,"cmd":"ping","args":{}}')
        spy.publish(f"torwart/d/{b_id}/status", status(b_id), retain=True)
        time.sleep(0.3)
    for t, p in subs.items():
        out, err = p.communicate(timeout=15)
        assert out.strip() == "", f"A read {t}: {out}"

    got = subprocess.Popen(["mosquitto_sub", *A, "-q", "1", "-t", f"torwart/d/{a_id}/cmd", "-C", "1",
                            "-W", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    spy.publish(f"torwart/d/{a_id}/cmd", '{"v":1,"cmd":"ping","args":{}}')
    out, err = got.communicate(timeout=15)
    assert '"cmd":"ping"' in out, err

    # A's certificate with B's client id (or any other id) is refused outright.
    p = run(["mosquitto_pub", *clients_args(server, a_cert, a_key, b_id, dport), "-t",
             f"torwart/d/{b_id}/status", "-m", status(b_id)], check=False)
    assert p.returncode != 0
    assert "not authori" in (p.stderr + p.stdout).lower()
    # On torwartd's loopback listener a device certificate gets no more than on its own: the
    # pinned torwartd certificate, not the port, makes a client privileged.
    sneaky = f"torwart/d/{b_id}/inventory"
    run(["mosquitto_pub", *clients_args(server, a_cert, a_key, a_id, ports(server)["server"]),
         "-q", "1", "-t", sneaky, "-m", '{"v":1}'], check=False)
    p = run(["mosquitto_sub", *clients_args(server, a_cert, a_key, a_id, ports(server)["server"]),
             "-t", "#", "-W", "2"], check=False)
    assert p.stdout.strip() == ""
    time.sleep(0.5)
    assert sneaky not in {t for t, _, _ in spy.messages}


def test_revoked_device_is_disconnected_within_5s_and_cannot_reconnect(server, admin, fleet):
    """Acceptance 5 (revocation)."""
    (a_id, a_cert, a_key), _, spy = fleet
    dport = ports(server)["device"]
    dev = Peer(server, a_cert, a_key, a_id, dport, will_topic=f"torwart/d/{a_id}/status").start()
    dev.publish(f"torwart/d/{a_id}/status", status(a_id), retain=True)
    wait_for(lambda: admin.run("device", "show", "dev-a", json_out=True).get("online"),
             what="dev-a online in the registry")
    t0 = time.time()
    admin.run("device", "revoke", "dev-a", "--reason", "keyCompromise")
    wait_for(lambda: dev.disconnected_at, timeout=10, what="the broker to drop dev-a")
    assert dev.disconnected_at - t0 <= 5.0, dev.disconnected_at - t0
    # The kick publishes the last will: the registry shows the device offline (a live
    # transition, audited), and the broker did not crash doing it.
    wait_for(lambda: not admin.run("device", "show", "dev-a", json_out=True).get("online"),
             what="dev-a offline in the registry")
    assert ("device.offline",) in server.db("SELECT type FROM audit WHERE actor = ?", a_id)
    assert broker_exits(server) == []
    dev.stop()
    again = Peer(server, a_cert, a_key, a_id, dport).start(wait=False)
    assert again.refused.wait(10) or not again.connected.wait(3)
    assert not again.connected.is_set()
    again.stop()
    p = run(["mosquitto_pub", *clients_args(server, a_cert, a_key, a_id, dport), "-t",
             f"torwart/d/{a_id}/status", "-m", status(a_id)], check=False)
    assert p.returncode != 0


def test_expired_certificate_is_disconnected_and_refused(make_server, tmp_path):
    """Acceptance 5 (expiry): a 15 s certificate is dropped at its notAfter and refused after."""
    from conftest import admin_cli
    server = make_server("--device-lifetime", "15s")
    admin = admin_cli(server, tmp_path)
    d_id, cert, key = enroll(server, admin, tmp_path, "short")
    not_after = run(["openssl", "x509", "-in", cert, "-noout", "-enddate", "-dateopt", "iso_8601"],
                    check=False).stdout
    dport = ports(server)["device"]
    dev = Peer(server, cert, key, d_id, dport, will_topic=f"torwart/d/{d_id}/status").start()
    end = time.time() + 16
    wait_for(lambda: dev.disconnected_at, timeout=30, what="disconnect at expiry")
    # Dropped at (not long after) the expiry, not before it (the cert started 60 s back-dated
    # lifetime: notBefore = now - 60 s, notAfter = now + 15 s).
    assert dev.disconnected_at >= end - 3, not_after
    assert broker_exits(server) == []
    dev.stop()
    p = run(["mosquitto_pub", *clients_args(server, cert, key, d_id, dport), "-t",
             f"torwart/d/{d_id}/status", "-m", status(d_id)], check=False)
    assert p.returncode != 0


def mosquitto_pids(server):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            st = Path(f"/proc/{pid}/stat").read_text()
            ppid = int(st.rsplit(")", 1)[1].split()[1])
            if ppid == server.proc.pid and "mosquitto" in Path(f"/proc/{pid}/cmdline").read_text():
                out.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_broker_is_restarted_and_devices_and_torwartd_reconnect(server, admin, fleet):
    """Acceptance 2 (broker part): kill -9 mosquitto; torwartd restarts it, a device reconnects
    on its own, torwartd re-subscribes and sees it online again."""
    (a_id, a_cert, a_key), _, spy = fleet
    dport = ports(server)["device"]
    dev = Peer(server, a_cert, a_key, a_id, dport, will_topic=f"torwart/d/{a_id}/status")
    dev.c.on_connect = lambda c, u, f, rc, p=None: (
        dev._on_connect(c, u, f, rc, p),
        rc == 0 and c.publish(f"torwart/d/{a_id}/status", status(a_id), qos=1, retain=True))
    dev.start()
    wait_for(lambda: admin.run("device", "show", "dev-a", json_out=True).get("online"),
             what="dev-a online")
    [pid] = mosquitto_pids(server)
    os.kill(pid, 9)
    wait_for(lambda: mosquitto_pids(server) and mosquitto_pids(server) != [pid], timeout=20,
             what="a new mosquitto")
    wait_for(lambda: dev.disconnected_at, timeout=10, what="the device to notice")
    wait_for(lambda: dev.connected.is_set(), timeout=30, what="the device to reconnect")
    # torwartd marked everything offline on reconnecting and learns the device is back.
    wait_for(lambda: admin.run("device", "show", "dev-a", json_out=True).get("online"),
             timeout=30, what="dev-a online again in the registry")
    types = [r[0] for r in server.db("SELECT type FROM audit WHERE type LIKE 'broker.%'")]
    assert "broker.exit" in types and types.count("broker.start") >= 2
    dev.stop()
    assert server.alive()


def test_registry_inventory_health_and_ping(server, admin, fleet):
    """Acceptance 1 (server side) and `torwart device ping`."""
    (a_id, a_cert, a_key), _, spy = fleet
    dev = Peer(server, a_cert, a_key, a_id, ports(server)["device"],
               will_topic=f"torwart/d/{a_id}/status", respond=True).start()
    dev.c.subscribe(f"torwart/d/{a_id}/cmd", qos=1)
    dev.publish(f"torwart/d/{a_id}/status", status(a_id), retain=True)
    dev.publish(f"torwart/d/{a_id}/inventory",
                json.dumps({"v": 1, "hostname": "gw-a", "os": "Debian GNU/Linux 12",
                            "agent_version": "test", "attributes": {"line": "3"}}), retain=True)
    dev.publish(f"torwart/d/{a_id}/health",
                json.dumps({"v": 1, "cpu": 7.5, "mem": {"total": 1000, "used": 400},
                            "disk": {"total": 10, "used": 2}, "uptime": 42}))
    wait_for(lambda: "health" in admin.run("device", "show", "dev-a", json_out=True),
             what="health in device show")
    d = admin.run("device", "show", "dev-a", json_out=True)
    assert d["online"] is True and d["agent_version"] == "test" and "last_seen" in d
    assert d["inventory"]["hostname"] == "gw-a" and d["health"]["cpu"] == 7.5
    text = admin.run("device", "show", "dev-a").stdout
    assert "gw-a" in text and "online:   yes" in text
    listing = admin.run("device", "list").stdout
    assert "ONLINE" in listing and "LAST SEEN" in listing
    row = [l for l in listing.splitlines() if l.startswith("dev-a")][0]
    assert " yes " in row
    assert [x for x in admin.run("device", "list", json_out=True)["devices"]
            if x["name"] == "dev-b"][0]["online"] is False

    p = admin.run("device", "ping", "dev-a")
    assert "reply from dev-a: time=" in p.stdout
    j = admin.run("device", "ping", "dev-a", json_out=True)
    assert j["ok"] is True and j["rtt_ms"] > 0 and j["result"] == {"pong": True}
    # A device that does not answer: a timeout, not a hang.
    p = admin.run("device", "ping", "dev-b", "--timeout-ms", "500", check=False)
    assert p.returncode != 0 and "did not answer" in p.stderr
    assert "device.ping" in [r[0] for r in server.db("SELECT type FROM audit")]
    dev.stop()


def test_garbage_from_devices_is_rejected_audited_and_harmless(server, admin, fleet):
    """Acceptance 9: malformed JSON, oversized payloads, wrong types on every topic the server
    reads -> a log line and an audit event each; the server keeps working."""
    (a_id, a_cert, a_key), _, spy = fleet
    dev = Peer(server, a_cert, a_key, a_id, ports(server)["device"]).start()
    garbage = [b"", b"not json", b"\xff\xfe\x00binary", b"[1,2,3]", b'{"v":2,"state":"online"}',
               b'{"v":"1"}', b"{" * 5000, b'{"v":1,"pad":"' + b"x" * 70000 + b'"}',
               b'{"v":1,"state":42,"cpu":"hot","ok":"yes","hostname":7,"mem":{"total":-1}}']
    leaves = ("status", "inventory", "health", "res")
    for leaf in leaves:
        for g in garbage:
            dev.publish(f"torwart/d/{a_id}/{leaf}", g)
    n = len(garbage) * len(leaves)

    def bad_events():
        return server.db("SELECT target, reason FROM audit WHERE type = 'device.bad_message'")

    wait_for(lambda: len(bad_events()) >= n, timeout=30, what=f"{n} device.bad_message events")
    targets = {t for t, _ in bad_events()}
    assert {f"torwart/d/{a_id}/{leaf}" for leaf in leaves} <= targets
    reasons = " ".join(r for _, r in bad_events())
    assert "64 KiB" in reasons and "not valid JSON" in reasons and "version" in reasons
    assert "bad message from device" in server.stderr_path.read_text()
    # Still working: a good message is taken, the REST API answers, nothing stored was lost.
    assert server.alive()
    dev.publish(f"torwart/d/{a_id}/status", status(a_id), retain=True)
    wait_for(lambda: admin.run("device", "show", "dev-a", json_out=True).get("online"),
             what="a valid status after the garbage")
    assert len(admin.run("device", "list", json_out=True)["devices"]) == 2
    dev.stop()
