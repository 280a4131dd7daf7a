"""Issue 3, agent side of the control channel, against the real Mosquitto that torwartd runs with
the torwart plugin: an enrolled torwart-agent comes online with inventory and health (1), survives
broker and server restarts (2) and a 20 s network cut in a network namespace (3), reconnects a
swarm with jittered backoff (6), moves between servers with `profile use` and is driven through
its local socket API (7)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import AGENT, BUILD, admin_cli, free_port, run, wait_for
from test_pki import add_device

SWARM = BUILD / "libs" / "mqtt" / "torwart-mqtt-swarm"


def show(admin, name):
    return admin.run("device", "show", name, json_out=True)


class Agent:
    """A torwart-agent with its own state dir; `run` in the background."""

    def __init__(self, tmp: Path, name: str):
        self.state = tmp / f"agent-{name}"
        self.name = name
        self.proc = None
        self.log = tmp / f"agent-{name}.log"

    def cli(self, *args, check=True, input=None, timeout=30):
        return run([str(AGENT), "--state-dir", str(self.state), *args], check=check, input=input,
                   timeout=timeout)

    def enroll(self, server, admin, device=None, profile=None):
        dev = add_device(admin, device or self.name)
        extra = ["--profile", profile] if profile else []
        self.cli("enroll", "--server", server.url, "--ca", server.ca, "--ref",
                 dev["enrollment"]["reference"], "--secret", dev["enrollment"]["secret"], *extra)
        return dev

    def start(self, *args, prefix=()):
        self.proc = subprocess.Popen(
            [*prefix, str(AGENT), "--state-dir", str(self.state), "--log-level", "debug", "run",
             "--health-interval", "1", "--keepalive", "5", "--backoff-cap", "3", *args],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        wait_for(lambda: (self.state / "agent.sock").exists() or self.proc.poll() is not None,
                 what="agent socket")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def api_call(sock_path, op, args=None):
    """The local API, spoken directly (JSON lines over the Unix socket)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(sock_path))
    req = {"v": 1, "op": op, "id": 1}
    if args is not None:
        req["args"] = args
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)


@pytest.fixture
def admin_cli_for():
    return lambda srv: admin_cli(srv, srv.tmp)


@pytest.fixture
def agents(tmp_path):
    started = []

    def make(name):
        a = Agent(tmp_path, name)
        started.append(a)
        return a
    yield make
    for a in started:
        a.stop()


def online(admin, name):
    return show(admin, name).get("online") is True


def offline(admin, name):
    return show(admin, name).get("online") is False


# --- 1: online, inventory, health, commands -----------------------------------------------------

def test_agent_online_with_inventory_health_and_commands(server, admin, agents, tmp_path):
    inv = tmp_path / "inventory.d"
    inv.mkdir()
    script = inv / "inventory-plc"
    script.write_text("#!/bin/sh\necho plc_model=S7-1500\necho firmware=2.9\n")
    script.chmod(0o755)
    a = agents("gw-1")
    a.enroll(server, admin)
    state = json.loads((a.state / "agent.json").read_text())
    assert state["mqtt_url"].startswith("mqtts://"), "enroll stores the broker address"
    a.start("--inventory-dir", str(inv), "--inventory-interval", "1")

    wait_for(lambda: online(admin, "gw-1"), what="gw-1 online")
    d = wait_for(lambda: (lambda x: x if "health" in x and "inventory" in x else None)(
        show(admin, "gw-1")), what="inventory and health in device show")
    assert d["inventory"]["hostname"] == socket.gethostname()
    assert d["inventory"]["attributes"]["plc_model"] == ["S7-1500"]
    assert d["inventory"]["agent_version"] == "0.1.0"
    assert isinstance(d["inventory"]["interfaces"], list) and d["inventory"]["interfaces"]
    assert 0 <= d["health"]["cpu"] <= 100 and d["health"]["mem"]["total"] > 0
    assert d["health"]["uptime"] > 0

    # The agent's own view, through the CLI (a client of the local API).
    st = a.status()
    assert st["connection"]["state"] == "connected" and st["agent_running"] is True
    assert "connected" in a.cli("status").stdout

    # Inventory changes are published without a reconnect.
    script.write_text("#!/bin/sh\necho plc_model=S7-1200\n")
    wait_for(lambda: show(admin, "gw-1")["inventory"]["attributes"].get("plc_model") == ["S7-1200"],
             what="changed inventory")

    # Commands: ping round trip (server -> agent -> server).
    p = admin.run("device", "ping", "gw-1", json_out=True)
    assert p.get("ok", True) is not False
    assert a.status()["connection"]["commands_answered"] >= 1

    # A clean stop says offline (status message before DISCONNECT).
    a.stop()
    wait_for(lambda: offline(admin, "gw-1"), what="gw-1 offline after stop")
    assert a.status()["connection"]["state"] == "agent not running"


# --- 2: broker killed, torwartd killed -------------------------------------------------------------

def broker_pid(server):
    """The mosquitto child of torwartd."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.proc.pid and b"mosquitto" in cmd:
            return int(p.name)
    return None


def test_agent_survives_broker_and_server_restarts(make_server, admin_cli_for, agents, tmp_path):
    port = free_port()
    srv = make_server("--broker-listen", f"127.0.0.1:{port}")
    admin = admin_cli_for(srv)
    a = agents("gw-2")
    a.enroll(srv, admin)
    a.start()
    wait_for(lambda: online(admin, "gw-2"), what="gw-2 online")
    connects = a.status()["connection"]["connects"]

    # Kill the broker: torwartd restarts it, the agent reconnects within its backoff (cap 3 s).
    pid = wait_for(lambda: broker_pid(srv), what="mosquitto child")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: a.status()["connection"]["connects"] > connects, timeout=30,
             what="agent reconnected after broker restart")
    wait_for(lambda: online(admin, "gw-2"), what="gw-2 online again")

    # Kill torwartd (its broker goes with it): the agent keeps retrying...
    srv.proc.kill()
    srv.proc.wait()
    if (b := broker_pid(srv)) is not None:
        os.kill(b, signal.SIGKILL)
    wait_for(lambda: a.status()["connection"]["state"] in ("waiting", "connecting"),
             what="agent notices the broker is gone")
    time.sleep(5)
    st = a.status()["connection"]
    assert st["state"] != "connected" and st["connect_attempts"] > 2
    # ... and reconnects once torwartd is back (same ports).
    connects = st["connects"]
    srv.start()
    wait_for(lambda: a.status()["connection"]["connects"] > connects, timeout=30,
             what="agent reconnected after torwartd restart")
    wait_for(lambda: online(admin, "gw-2"), what="gw-2 online after torwartd restart")


# --- 3: network cut in a network namespace ---------------------------------------------------------

def netns_possible():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2"
    name = f"twprobe{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode != 0:
        return "cannot create a network namespace: " + p.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.fixture
def netns():
    why = netns_possible()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"twa{tag}", f"twh{tag}", f"twn{tag}"
    # A private /30 used only on this veth pair, inside namespaces this test creates.
    octet = 100 + (os.getpid() % 100)
    host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    cmds = [["ip", "netns", "add", ns],
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
            ["ip", "link", "set", ns_if, "netns", ns],
            ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if],
            ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
            ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        yield {"ns": ns, "host_if": host_if, "host_ip": host_ip}
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_network_cut_in_namespace(make_server, agents, netns, tmp_path):
    """The agent runs in its own network namespace and reaches torwartd's managed broker over a
    veth pair; the host side of the veth goes down for 20 s. torwartd's registry shows the device
    offline during the cut (the broker's last will), and the agent reconnects on its own."""
    port = free_port()
    server = make_server("--broker-listen", f"{netns['host_ip']}:{port}")
    admin = admin_cli(server, tmp_path)
    a = agents("gw-3")
    a.enroll(server, admin)  # on the host; only `run` lives in the namespace

    def online():
        return bool(admin.run("device", "show", "gw-3", json_out=True).get("online"))

    # The broker certificate names 127.0.0.1, not the veth address: verify that name.
    a.start("--mqtt-url", f"mqtts://{netns['host_ip']}:{port}", "--mqtt-server-name", "127.0.0.1",
            prefix=("ip", "netns", "exec", netns["ns"]))
    wait_for(online, timeout=30, what="online in torwartd's registry through the veth")
    subprocess.run(["ip", "link", "set", netns["host_if"], "down"], check=True)
    cut = time.time()
    # Keepalive 5 s: the broker gives up after 1.5 x keepalive and publishes the last will.
    wait_for(lambda: not online(), timeout=18, what="offline in torwartd's registry during the cut")
    assert a.status()["connection"]["state"] != "connected"
    time.sleep(max(0, 20 - (time.time() - cut)))
    assert not online()
    subprocess.run(["ip", "link", "set", netns["host_if"], "up"], check=True)
    wait_for(online, timeout=40, what="online again after the cut")
    assert a.status()["connection"]["connects"] >= 2


# --- 6: reconnect spread of a swarm ----------------------------------------------------------------

def openssl(*args, cwd):
    run(["openssl", *args], cwd=cwd)


def test_swarm_reconnects_are_spread_by_jitter(tmp_path):
    """200 clients with the agent's reconnect code; the broker dies for 3 s. Without jitter they
    would all retry at the same instants; with full jitter the reconnects spread out."""
    if not SWARM.exists():
        pytest.skip("torwart-mqtt-swarm not built")
    d = tmp_path
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=swarm-ca", "-days", "1", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        extfile = d / f"{name}.ext"
        extfile.write_text((ext or "basicConstraints=CA:FALSE") + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", str(extfile),
                cwd=d)
    port = free_port()
    (d / "m.conf").write_text(
        f"per_listener_settings true\nuser root\npersistence false\nlog_dest none\n"
        f"max_keepalive 60\nlistener {port} 127.0.0.1\ncafile {d}/ca.pem\n"
        f"certfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n"
        f"tls_version tlsv1.3\nallow_anonymous true\n")

    def start_broker():
        p = subprocess.Popen(["mosquitto", "-c", str(d / "m.conf")], stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what="mosquitto")
        return p

    broker = start_broker()
    n = 200
    swarm = subprocess.Popen(
        [str(SWARM), "--url", f"mqtts://127.0.0.1:{port}", "--ca", str(d / "ca.pem"),
         "--cert", str(d / "client.pem"), "--key", str(d / "client.key"), "--clients", str(n),
         "--duration", "25", "--backoff-base-ms", "500", "--backoff-cap-ms", "4000"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # all connected
        broker.kill()
        broker.wait()
        down = time.time()
        time.sleep(3)
        broker = start_broker()
        out, _ = swarm.communicate(timeout=60)
    finally:
        if swarm.poll() is None:
            swarm.kill()
        broker.kill()
    (d / "swarm.out").write_text(out)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    first = [e for e in events if e["event"] == "connected" and e["n"] == 1]
    assert len(first) == n, "every client connected once at the start"
    second = sorted(e["t"] for e in events if e["event"] == "connected" and e["n"] == 2)
    assert len(second) == n, f"only {len(second)} of {n} clients reconnected"
    span = second[-1] - second[0]
    # The largest burst: most reconnects inside any 250 ms window.
    burst = max(sum(1 for t in second[i:] if t - second[i] < 0.25) for i in range(len(second)))
    print(json.dumps({"clients": n, "reconnect_span_s": round(span, 3),
                      "max_in_250ms": burst, "outage_s": 3}))
    assert span > 1.0, f"reconnects within {span:.2f} s: no spread"
    assert burst < n * 0.5, f"{burst} of {n} clients reconnected within 250 ms"
    del down


# --- 7: profiles and the local API -----------------------------------------------------------------

def announced(srv):
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=srv.ca)
    with urllib.request.urlopen(srv.url + "/.well-known/torwart/agent.json", context=ctx,
                                timeout=10) as r:
        return json.loads(r.read())["mqtt_url"]


def test_profile_switch_and_local_api(make_server, admin_cli_for, agents):
    srv_a = make_server(subdir="srv-a")
    srv_b = make_server(subdir="srv-b")
    admin_a, admin_b = admin_cli_for(srv_a), admin_cli_for(srv_b)
    a = agents("gw-7")
    a.enroll(srv_a, admin_a)
    a.enroll(srv_b, admin_b, profile="plant-b")
    profiles = json.loads(a.cli("profile", "list", "--json").stdout)
    assert [p["name"] for p in profiles] == ["default", "plant-b"]
    assert profiles[0]["active"] and not profiles[1]["active"]
    a.start()
    sock = a.state / "agent.sock"
    assert (sock.stat().st_mode & 0o777) == 0o660

    # The CLI and the socket API give the same status.
    via_cli = a.status()
    via_api = api_call(sock, "status")
    assert via_api["ok"] and via_api["id"] == 1
    for k in ("device_id", "server", "profile", "serial"):
        assert via_api["result"][k] == via_cli[k]
    assert via_cli["server"] == srv_a.url and via_cli["profile"] == "default"

    # profile use (CLI): the running agent moves to server B and its broker.
    a.cli("profile", "use", "plant-b")
    st = wait_for(lambda: (lambda s: s if s["profile"] == "plant-b" else None)(a.status()),
                  what="agent on profile plant-b")
    assert st["server"] == srv_b.url and st["device_id"] != via_cli["device_id"]
    assert st["connection"]["mqtt_url"] == announced(srv_b)

    # The same over the socket: back to A.
    r = api_call(sock, "profile.use", {"name": "default"})
    assert r["ok"] and r["result"]["profile"] == "default", r
    wait_for(lambda: a.status()["server"] == srv_a.url, what="back on server A")
    assert api_call(sock, "profile.list")["result"][0]["active"] is True

    # disconnect / connect, over the socket and the CLI.
    assert api_call(sock, "disconnect")["ok"]
    assert a.status()["connection"]["state"] == "disconnected"
    a.cli("connect")
    wait_for(lambda: a.status()["connection"]["state"] != "disconnected", what="connecting")
    a.cli("disconnect")
    assert api_call(sock, "status")["result"]["connection"]["state"] == "disconnected"
    assert api_call(sock, "connect")["ok"]

    # PIN over both (this key is a file: the PIN is accepted and the agent reconnects with it).
    assert api_call(sock, "pin", {"pin": "1234"})["ok"]
    a.cli("pin", input="1234\n")

    # Bad requests are answered, not fatal.
    for bad in ({"v": 1, "op": "reboot"}, {"v": 2, "op": "status"},
                {"v": 1, "op": "profile.use", "args": {"name": "../../etc"}}):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock))
        s.sendall((json.dumps(bad) + "\n").encode())
        resp = json.loads(s.recv(65536))
        s.close()
        assert resp["ok"] is False and resp["error"]
    r = a.cli("profile", "use", "nope", check=False)
    assert r.returncode != 0 and "not enrolled" in r.stderr
    assert api_call(sock, "status")["ok"]


def test_profile_switch_moves_the_device_between_servers(make_server, admin_cli_for, agents):
    """Through torwartd's own brokers and registries: online at A, then at B (offline at A)."""
    srv_a = make_server(subdir="srv-a")
    srv_b = make_server(subdir="srv-b")
    admin_a, admin_b = admin_cli_for(srv_a), admin_cli_for(srv_b)
    a = agents("gw-8")
    a.enroll(srv_a, admin_a)
    a.enroll(srv_b, admin_b, profile="plant-b")
    a.start()
    wait_for(lambda: online(admin_a, "gw-8"), timeout=30, what="online at server A")
    a.cli("profile", "use", "plant-b")
    wait_for(lambda: online(admin_b, "gw-8"), timeout=30, what="online at server B")
    wait_for(lambda: offline(admin_a, "gw-8"), what="offline at server A")
    assert api_call(a.state / "agent.sock", "profile.use", {"name": "default"})["ok"]
    wait_for(lambda: online(admin_a, "gw-8"), timeout=30, what="back online at server A")
    wait_for(lambda: offline(admin_b, "gw-8"), what="offline at server B")


# --- the agent's messages on the wire, against a Mosquitto of our own with torwartd's CA -----------
# Independent of torwartd's registry: a plain Mosquitto (our CA, our server certificate, an ACL
# that keeps each device to its own topics) and an observer on a loopback-only plain listener.

class PlainBroker:
    def __init__(self, server, tmp: Path, host="127.0.0.1"):
        self.host = host
        self.port, self.obs_port = free_port(), free_port()
        pki = server.data_dir / "pki"
        (tmp / "plain.acl").write_text(
            "pattern write torwart/d/%u/status\npattern write torwart/d/%u/inventory\n"
            "pattern write torwart/d/%u/health\npattern write torwart/d/%u/res\n"
            "pattern read torwart/d/%u/cmd\n")
        (tmp / "plain.conf").write_text(
            f"per_listener_settings true\nuser root\npersistence false\nlog_dest none\n"
            f"listener {self.port} {host}\ncafile {pki}/chain.pem\ncertfile {pki}/server.pem\n"
            f"keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
            f"tls_version tlsv1.3\nacl_file {tmp}/plain.acl\n"
            f"listener {self.obs_port} 127.0.0.1\nallow_anonymous true\n")
        self.conf = tmp / "plain.conf"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.socket().connect_ex((self.host, self.port)) == 0, what="mosquitto")
        return self

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return f"mqtts://{self.host}:{self.port}"


class Observer:
    def __init__(self, port):
        import paho.mqtt.client as paho
        self.paho = paho
        self.msgs = []
        self.c = paho.Client(client_id="observer-" + uuid.uuid4().hex[:6], protocol=paho.MQTTv5)
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("torwart/#", qos=1)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def last(self, topic):
        for m in reversed(self.msgs):
            if m.topic == topic:
                return json.loads(m.payload)
        return None

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_agent_messages_commands_and_broker_restart(server, admin, agents, tmp_path):
    pytest.importorskip("paho.mqtt.client")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    broker = PlainBroker(server, tmp_path).start()
    obs = Observer(broker.obs_port)
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "site").write_text("#!/bin/sh\necho line=3\n")
    (inv / "site").chmod(0o755)
    try:
        a = agents("gw-p")
        dev = a.enroll(server, admin)
        uid = dev["id"]
        a.start("--mqtt-url", broker.url, "--inventory-dir", str(inv))
        t = f"torwart/d/{uid}/"
        st = wait_for(lambda: obs.last(t + "status"), what="status")
        assert st["state"] == "online" and st["v"] == 1 and isinstance(st["ts"], int)
        invj = wait_for(lambda: obs.last(t + "inventory"), what="inventory")
        assert invj["attributes"]["line"] == ["3"] and invj["hostname"] == socket.gethostname()
        h = wait_for(lambda: obs.last(t + "health"), what="health")
        assert 0 <= h["cpu"] <= 100 and h["mem"]["total"] >= h["mem"]["used"] > 0
        assert a.status()["connection"]["state"] == "connected"

        # Commands with MQTT 5 request/response (mosquitto_rr is the requester here; the ACL
        # of the observer listener lets it write the device's cmd topic).
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = t + "res"
        props.CorrelationData = b"\x01corr"
        obs.c.publish(t + "cmd", json.dumps({"v": 1, "cmd": "ping", "args": {}}), qos=1,
                      properties=props)
        res = wait_for(lambda: [m for m in obs.msgs if m.topic == t + "res"], what="ping response")
        assert json.loads(res[0].payload)["ok"] is True
        assert res[0].properties.CorrelationData == b"\x01corr"
        props.CorrelationData = b"\x02"
        obs.c.publish(t + "cmd", json.dumps({"v": 1, "cmd": "selfdestruct"}), qos=1,
                      properties=props)
        res = wait_for(lambda: [m for m in obs.msgs if m.topic == t + "res"
                                and m.properties.CorrelationData == b"\x02"], what="error response")
        body = json.loads(res[0].payload)
        assert body["ok"] is False and "unknown command" in body["error"]
        props.CorrelationData = b"\x03"
        obs.c.publish(t + "cmd", b"{not json", qos=1, properties=props)
        wait_for(lambda: [m for m in obs.msgs if m.topic == t + "res"
                          and m.properties.CorrelationData == b"\x03"], what="garbage answered")

        # Broker killed: the agent reconnects within its backoff (cap 3 s) and announces itself.
        connects = a.status()["connection"]["connects"]
        broker.kill()
        wait_for(lambda: a.status()["connection"]["state"] != "connected", what="agent noticed")
        time.sleep(2)
        obs.msgs.clear()
        broker.start()
        wait_for(lambda: a.status()["connection"]["connects"] > connects, timeout=20,
                 what="agent reconnected after broker restart")
        wait_for(lambda: (obs.last(t + "status") or {}).get("state") == "online",
                 what="online again (retained status republished)")
        wait_for(lambda: obs.last(t + "inventory"), what="inventory republished")

        # disconnect through the local API: status offline, no reconnect until connect.
        a.cli("disconnect")
        wait_for(lambda: (obs.last(t + "status") or {}).get("state") == "offline",
                 what="offline after disconnect")
        time.sleep(2)
        assert a.status()["connection"]["state"] == "disconnected"
        a.cli("connect")
        wait_for(lambda: (obs.last(t + "status") or {}).get("state") == "online",
                 what="online after connect")
        # A crash (SIGKILL): the broker publishes the last will after 1.5 x keepalive.
        a.proc.kill()
        a.proc.wait()
        wait_for(lambda: (obs.last(t + "status") or {}).get("state") == "offline", timeout=15,
                 what="last will offline")
    finally:
        obs.stop()
        broker.kill()
