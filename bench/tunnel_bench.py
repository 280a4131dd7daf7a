#!/usr/bin/env python3
"""Tunnel benchmarks T1, L1, S1 and M1 of BENCHMARKS.md: torwart (CLI -> relay in torwartd ->
agent -> target, end-to-end mutual TLS inside the relay's TLS) against an `ssh -J` chain and a
3-hop haproxy TLS chain, all on loopback, run side by side in turns (A B C A B C ...).

  bench/tunnel_bench.py t1|l1|s1|m1|all [--build-dir build/bench-tun] [--pairs 5] ...

Prints one JSON line per figure on stdout (progress on stderr). Every goal is a ratio measured in
the same run; absolute numbers are only valid for this machine at that moment. If the torwart
side cannot be set up (binaries or commands missing), the peers still run and the torwart fields
are null with the reason in "torwart_error".

Peers (the exact set-ups; docs/PERFORMANCE.md repeats them):
  haproxy 2.6, three processes, `mode tcp`, `nbthread 1`: #1 plain TCP in -> TLS out (client
  cert) -> #2 "relay" (TLS in with client cert required -> TLS out with client cert) -> #3
  "gateway" (TLS in -> TCP out) -> target. TLS 1.3 only, TLS_AES_128_GCM_SHA256, X25519, P-256
  certificates from one throw-away CA. The relay sees plaintext (that is the comparison).
  ssh -J: two sshd (`/usr/sbin/sshd -D -f CFG`, own ECDSA P-256 host keys, key auth only,
  Ciphers aes128-gcm@openssh.com, KexAlgorithms curve25519-sha256) as jump host and gateway;
  T1/L1 `ssh -F CFG -N -J root@127.0.0.1:JUMP -p GW root@127.0.0.1 -L LOCAL:127.0.0.1:TARGET`,
  S1 a cold `ssh -F CFG -J root@127.0.0.1:JUMP -p GW root@127.0.0.1 -W 127.0.0.1:TARGET` until the
  target's first byte arrives on its stdout. The relay is the jump host's sshd (its children).
  torwart: a real torwartd (own data dir, embedded broker, relay), admin with TOTP, a policy with
  one site "bench" and one target per benchmark target, device "bench-gw" enrolled with
  torwart-agent (file key store) whose site.toml allowlists those targets, one access request per
  target (granted by a rule without approval), and `torwart connect bench/TARGET --local-port N`.
Targets: iperf3 -s (T1), sockperf server --tcp (L1), a server that sends one byte on accept (S1),
an echo server (M1). Only the Python 3 standard library is used.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(*a):
    print("[tunnel-bench]", *a, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether something listens on TCP `port` (read from /proc/net/tcp*, without connecting:
    a probe connection would reach the target through the chains and upset iperf3)."""
    want = f":{port:04X}"
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited ({proc.returncode}) before port {port} opened")
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout} s")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rnd(x, n=3):
    return None if x is None else round(x, n)


# ------------------------------------------------------------------------------------------
# /proc readings

def proc_cpu_s(pid):
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(pid):
    """pid and all its descendants (by walking /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pin(pids, cpus):
    """Moves every thread of `pids` to `cpus` (mode R of reference/perf.md: relay on CPU 1)."""
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def settle(pids, quiet_cpu_s=0.03, window=0.5, timeout=120):
    """Waits until `pids` together use less than quiet_cpu_s per window (e.g. the agent's
    recording upload after a torwart run), so one side's after-work never lands in the next
    side's run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = CpuMeter(lambda: pids)
        m.start()
        time.sleep(window)
        if m.stop() < quiet_cpu_s:
            return
    log("settle: still busy after", timeout, "s")


class CpuMeter:
    """CPU seconds of a process tree between start() and stop() (processes alive at both)."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn

    def start(self):
        self.before = {}
        for p in self.pids_fn():
            try:
                self.before[p] = proc_cpu_s(p)
            except OSError:
                pass

    def stop(self):
        total = 0.0
        for p, b in self.before.items():
            try:
                total += proc_cpu_s(p) - b
            except OSError:
                pass
        return total


# ------------------------------------------------------------------------------------------
# processes we start (each in its own process group; stopped by pid at exit)

class Procs:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs = []

    def start(self, name, cmd, env=None, stdin=subprocess.DEVNULL, stdout=None, cwd=None):
        out = open(self.workdir / f"{name}.out", "ab") if stdout is None else stdout
        err = open(self.workdir / f"{name}.err", "ab")
        p = subprocess.Popen([str(c) for c in cmd], stdin=stdin, stdout=out, stderr=err, env=env,
                             start_new_session=True, cwd=cwd)
        p.bench_name = name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            self.stop(p)


def run(cmd, check=True, input=None, env=None, timeout=120):
    p = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True,
                       env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# ------------------------------------------------------------------------------------------
# certificates for the peers: one CA, P-256 leaves valid for localhost/127.0.0.1

def make_pki(d: Path):
    d.mkdir(parents=True, exist_ok=True)

    def key(name):
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", d / f"{name}.key"])

    key("ca")
    run(["openssl", "req", "-x509", "-new", "-key", d / "ca.key", "-subj", "/CN=bench peers CA",
         "-days", "30", "-out", d / "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    ext = d / "leaf.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n")
    for name in ("client", "relay", "relay-client", "gateway"):
        key(name)
        run(["openssl", "req", "-new", "-key", d / f"{name}.key", "-subj", f"/CN={name}",
             "-out", d / f"{name}.csr"])
        run(["openssl", "x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem", "-CAkey",
             d / "ca.key", "-CAcreateserial", "-days", "30", "-extfile", ext,
             "-out", d / f"{name}.pem"])
        (d / f"{name}.full.pem").write_text((d / f"{name}.pem").read_text() +
                                            (d / f"{name}.key").read_text())
    return d


# ------------------------------------------------------------------------------------------
# targets

def target_server_main(kind, port):
    """`first`: sends one byte on accept and keeps the connection until the peer closes.
    `echo`: echoes everything. Both single-threaded (selectors), for thousands of idle streams."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    c, _ = ls.accept()
                except OSError:
                    continue
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if kind == "first":
                    try:
                        c.send(b"!")
                    except OSError:
                        c.close()
                        continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "c")
            else:
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    c.close()
                elif kind == "echo":
                    try:
                        c.sendall(data)
                    except OSError:
                        pass


def open_streams_main(ports, count, concurrency):
    """Opens `count` connections to 127.0.0.1:ports (round robin), each sends one byte and waits for its echo
    (so the whole path is up), prints "ready <n> <failed>" and holds them until stdin closes."""
    sel = selectors.DefaultSelector()
    done, failed, started, inflight = [], 0, 0, 0
    deadline = time.time() + max(120, count * 0.05)
    while (len(done) + failed) < count and time.time() < deadline:
        while started < count and inflight < concurrency:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", ports[started % len(ports)]))
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            started += 1
            inflight += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            if key.data == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    sel.unregister(s)
                    s.close()
                    failed += 1
                    inflight -= 1
                    continue
                try:
                    s.send(b"x")
                except OSError:
                    sel.unregister(s)
                    s.close()
                    failed += 1
                    inflight -= 1
                    continue
                sel.modify(s, selectors.EVENT_READ, "waiting")
            else:
                try:
                    data = s.recv(16)
                except OSError:
                    data = b""
                sel.unregister(s)
                inflight -= 1
                if data:
                    done.append(s)
                else:
                    s.close()
                    failed += 1
    print(f"ready {len(done)} {failed + count - len(done) - failed}", flush=True)
    sys.stdin.read()
    for s in done:
        s.close()


class Targets:
    def __init__(self, procs: Procs):
        self.procs = procs
        self.ports = {}

    def start(self, kind):
        port = free_port()
        if kind == "iperf":
            p = self.procs.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", port])
        elif kind == "sockperf":
            p = self.procs.start("sockperf-server",
                                 ["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", port])
        else:
            p = self.procs.start(f"target-{kind}", [sys.executable, __file__, "_target", kind, port])
        wait_port(port, proc=p)
        self.ports[kind] = port
        return port


# ------------------------------------------------------------------------------------------
# peer: haproxy 3-hop TLS chain

HAPROXY_GLOBAL = """global
  nbthread 1
  maxconn {maxconn}
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  maxconn {maxconn}
  timeout connect 10s
  timeout client 1h
  timeout server 1h
"""


class HaproxyChain:
    name = "haproxy"

    def __init__(self, procs: Procs, pki: Path, workdir: Path, maxconn=2000):
        self.procs, self.pki, self.workdir = procs, pki, workdir
        self.maxconn = maxconn
        self.relay = None

    def start(self, target_port):
        p = self.pki
        self.local_port, relay_port, gw_port = free_port(), free_port(), free_port()
        g = HAPROXY_GLOBAL.format(maxconn=self.maxconn)
        tls_in = f"ssl crt {p}/{{crt}}.full.pem ca-file {p}/ca.pem verify required curves X25519"
        tls_out = f"ssl crt {p}/{{crt}}.full.pem ca-file {p}/ca.pem verify required"
        cfgs = {
            "client": f"{g}listen cli\n  bind 127.0.0.1:{self.local_port}\n"
                      f"  server relay 127.0.0.1:{relay_port} {tls_out.format(crt='client')}\n",
            "relay": f"{g}listen relay\n  bind 127.0.0.1:{relay_port} {tls_in.format(crt='relay')}\n"
                     f"  server gw 127.0.0.1:{gw_port} {tls_out.format(crt='relay-client')}\n",
            "gateway": f"{g}listen gw\n  bind 127.0.0.1:{gw_port} {tls_in.format(crt='gateway')}\n"
                       f"  server target 127.0.0.1:{target_port}\n",
        }
        self.cfg_files = {}
        self.ps = {}
        for role in ("gateway", "relay", "client"):
            cfg = self.workdir / f"haproxy-{role}.cfg"
            cfg.write_text(cfgs[role])
            self.cfg_files[role] = cfg
            run(["haproxy", "-c", "-q", "-f", cfg])
            self.ps[role] = self.procs.start(f"haproxy-{role}", ["haproxy", "-db", "-f", cfg])
        wait_port(gw_port, proc=self.ps["gateway"])
        wait_port(relay_port, proc=self.ps["relay"])
        wait_port(self.local_port, proc=self.ps["client"])
        self.relay = self.ps["relay"].pid
        return self.local_port

    def relay_pids(self):
        return [self.relay]

    def gateway_pids(self):
        return [self.ps["gateway"].pid]

    def busy_pids(self):
        return [p.pid for p in self.ps.values()]

    def stop(self):
        for p in self.ps.values():
            self.procs.stop(p)


# ------------------------------------------------------------------------------------------
# peer: ssh -J (jump host sshd = relay, gateway sshd)

SSHD_CFG = """Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_{role}
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {dir}/authorized_keys
AllowTcpForwarding yes
Ciphers aes128-gcm@openssh.com
KexAlgorithms curve25519-sha256
HostKeyAlgorithms ecdsa-sha2-nistp256
PubkeyAcceptedAlgorithms ecdsa-sha2-nistp256
MaxStartups 200:30:400
MaxSessions 100
LogLevel ERROR
"""

SSH_CFG = """Host *
  User root
  IdentityFile {dir}/id_ecdsa
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  Compression no
  Ciphers aes128-gcm@openssh.com
  KexAlgorithms curve25519-sha256
  HostKeyAlgorithms ecdsa-sha2-nistp256
  ControlMaster no
  ControlPath none
"""


class SshJump:
    name = "ssh_j"

    def __init__(self, procs: Procs, workdir: Path):
        self.procs = procs
        self.dir = workdir / "ssh"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fwd = None

    def start_servers(self):
        d = self.dir
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", d / "id_ecdsa"])
        shutil.copy(d / "id_ecdsa.pub", d / "authorized_keys")
        (d / "ssh_config").write_text(SSH_CFG.format(dir=d))
        self.jump_port, self.gw_port = free_port(), free_port()
        self.sshd = {}
        for role, port in (("jump", self.jump_port), ("gateway", self.gw_port)):
            run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", d / f"host_{role}"])
            cfg = d / f"sshd_{role}.cfg"
            cfg.write_text(SSHD_CFG.format(port=port, dir=d, role=role))
            run(["/usr/sbin/sshd", "-t", "-f", cfg])
            self.sshd[role] = self.procs.start(f"sshd-{role}", ["/usr/sbin/sshd", "-D", "-f", cfg])
        wait_port(self.jump_port, proc=self.sshd["jump"])
        wait_port(self.gw_port, proc=self.sshd["gateway"])

    def base_cmd(self):
        return ["ssh", "-F", self.dir / "ssh_config", "-J", f"root@127.0.0.1:{self.jump_port}",
                "-p", self.gw_port]

    def start(self, target_port):
        """The T1/L1 shape: ssh -J ... -L LOCAL:127.0.0.1:TARGET -N (one ssh session)."""
        self.local_port = free_port()
        cmd = self.base_cmd() + ["-N", "-o", "ExitOnForwardFailure=yes", "-L",
                                 f"127.0.0.1:{self.local_port}:127.0.0.1:{target_port}", "root@127.0.0.1"]
        self.fwd = self.procs.start("ssh-forward", cmd)
        wait_port(self.local_port, timeout=30, proc=self.fwd)
        return self.local_port

    def cold_first_byte(self, target_port):
        """S1: a cold `ssh -J ... -W 127.0.0.1:TARGET gateway` until the first byte arrives."""
        cmd = [str(c) for c in self.base_cmd()] + ["-W", f"127.0.0.1:{target_port}", "root@127.0.0.1"]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        b = p.stdout.read(1)
        dt = time.perf_counter() - t0
        p.stdin.close()
        p.terminate()
        p.wait()
        if b != b"!":
            raise RuntimeError("ssh -J -W: no first byte")
        return dt

    def relay_pids(self):
        return descendants(self.sshd["jump"].pid)

    def gateway_pids(self):
        return descendants(self.sshd["gateway"].pid)

    def busy_pids(self):
        return self.relay_pids() + self.gateway_pids()

    def stop_forward(self):
        if self.fwd is not None:
            self.procs.stop(self.fwd)
            self.fwd = None

    def stop(self):
        self.stop_forward()
        for p in self.sshd.values():
            self.procs.stop(p)


# ------------------------------------------------------------------------------------------
# torwart: torwartd + agent + CLI, set up the way tests/system does

def totp(secret_b32, step):
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return str((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000).zfill(6)


class Torwart:
    name = "torwart"
    SITE, GATEWAY = "bench", "bench-gw"

    def __init__(self, procs: Procs, build: Path, workdir: Path):
        self.procs, self.build = procs, build
        self.dir = workdir / "torwart"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.torwartd = build / "apps" / "torwartd" / "torwartd"
        self.cli = build / "apps" / "torwart" / "torwart"
        self.agent_bin = build / "apps" / "torwart-agent" / "torwart-agent"
        self.server = self.agent = None
        self.connects = {}  # target -> (proc, local port)
        self.grants = {}
        self.relay_port = free_port()
        # Fixed ports, so a restart (M1) keeps the addresses the agent and the CLI learnt.
        self.broker_listen = f"127.0.0.1:{free_port()}"

    # -- helpers
    def cli_run(self, *args, input=None, json_out=False, check=True):
        cmd = [self.cli, "--config-dir", self.dir / "cli"] + (["--json"] if json_out else []) + list(args)
        p = run(cmd, input=input, check=check)
        return json.loads(p.stdout) if json_out and p.returncode == 0 else p

    def agent_cmd(self, *args):
        return [self.agent_bin, "--state-dir", self.dir / "agent"] + list(args)

    def next_code(self):
        now = int(time.time()) // 30
        step = max(now, self.last_step + 1)
        if step > now + 1:
            time.sleep(30 - time.time() % 30 + 0.1)
            step = int(time.time()) // 30
        self.last_step = step
        return totp(self.totp_secret, step)

    def start_server(self):
        data = self.dir / "server"
        endpoint = data / "endpoint.json"
        if endpoint.exists():
            endpoint.unlink()
        cfg = self.dir / "torwartd.toml"
        # T1 recordings of random iperf3 data are large: let every one upload (default 256MiB).
        cfg.write_text('[recordings]\nmax_upload = "1GiB"\n')
        args = [self.torwartd, "--data-dir", data, "--config", cfg, "--listen", getattr(self, "listen", "127.0.0.1:0"),
                "--broker-listen", self.broker_listen,
                "--log-level", "warn"] + self.server_extra_args()
        self.server = self.procs.start("torwartd", args)
        out = self.dir.parent / "torwartd.out"
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError("torwartd exited: " + (self.dir.parent / "torwartd.err").read_text()[-2000:])
            if endpoint.exists() and "ready" in out.read_text():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("torwartd did not start")
        ep = json.loads(endpoint.read_text())
        self.url, self.ca = ep["url"], ep["ca"]
        self.listen = "127.0.0.1:" + self.url.rsplit(":", 1)[1]
        m = re.findall(r"one-time password:\s+(\S+)", out.read_text())
        return m[-1] if m else None

    def server_extra_args(self):
        # A fixed relay port, so restarts (M1) keep the address the CLI and agent learnt.
        return ["--relay-listen", f"127.0.0.1:{self.relay_port}"]

    def setup(self, targets):
        """targets: {name: port}. Everything up to running `torwart connect` per target."""
        if not self.torwartd.exists() or not self.cli.exists() or not self.agent_bin.exists():
            raise RuntimeError(f"binaries missing in {self.build}/apps (build torwartd torwart torwart-agent)")
        helps = run([self.cli, "connect", "--help"], check=False)
        if helps.returncode != 0:
            raise RuntimeError("`torwart connect` does not exist yet")
        if "--relay-listen" not in run([self.torwartd, "--help"], check=False).stdout:
            raise RuntimeError("torwartd has no --relay-listen yet")
        otp = self.start_server()
        # admin: one-time password -> own password -> TOTP (access paths need the second factor)
        pw = "bench admin password 42"
        self.cli_run("--server", self.url, "--ca", self.ca, "login", "--user", "admin",
                     "--password-stdin", input=otp + "\n")
        self.cli_run("passwd", input=f"{otp}\n{pw}\n")
        self.totp_secret = self.cli_run("mfa", "enroll", json_out=True)["secret"]
        self.last_step = -1
        self.cli_run("mfa", "confirm", self.next_code())
        # gateway device + agent
        dev = self.cli_run("device", "add", self.GATEWAY, "--site", self.SITE, json_out=True)
        enr = dev["enrollment"]
        run(self.agent_cmd("enroll", "--server", self.url, "--ca", self.ca, "--ref", enr["reference"],
                           "--secret", enr["secret"], "--key-store", "file"))
        site = ""
        for name, port in targets.items():
            site += f'[[target]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\nprotocol = "tcp"\n\n'
        site += '[streams]\nidle_timeout = "1h"\nrecording_quota = "4GiB"\nmax_streams = 1024\n'
        (self.dir / "agent" / "site.toml").write_text(site)
        self.start_agent()
        # policy: one site, one target per benchmark target, admin may use them without approval
        policy = {
            "version": 1,
            "defaults": {"max_duration": "8h"},
            "sites": {self.SITE: {"gateways": [self.GATEWAY]}},
            "targets": {name: {"site": self.SITE, "gateway": self.GATEWAY,
                               "address": f"127.0.0.1:{port}", "protocol": "tcp"}
                        for name, port in targets.items()},
            "rules": [{"id": "bench", "src": ["user:admin"], "dst": [f"site:{self.SITE}"]}],
        }
        pf = self.dir / "policy.jsonc"
        pf.write_text(json.dumps(policy, indent=1))
        self.cli_run("policy", "apply", pf)
        for name in targets:
            g = self.cli_run("access", "request", f"{self.SITE}/{name}", "--reason", "benchmark",
                             "--duration", "8h", json_out=True)
            if g.get("state") != "active":
                raise RuntimeError(f"grant for {name} not active: {g}")
            self.grants[name] = g["id"]
        self.wait_online()

    def start_agent(self):
        self.agent = self.procs.start("torwart-agent", self.agent_cmd("--log-level", "warn", "run"))

    def wait_online(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = self.cli_run("device", "show", self.GATEWAY, json_out=True, check=False)
            if isinstance(d, dict) and (d.get("online") or d.get("status") == "online"
                                        or d.get("connection", {}).get("online")):
                return
            time.sleep(0.3)
        raise RuntimeError("the agent did not come online")

    def connect(self, target, extra=()):
        """Starts `torwart connect bench/TARGET --local-port N` and waits until it listens."""
        if target in self.connects:
            return self.connects[target][1]
        port = free_port()
        cmd = [self.cli, "--config-dir", self.dir / "cli", "connect", f"{self.SITE}/{target}",
               "--local-port", port, "--grant", self.grants[target], *extra]
        p = self.procs.start(f"torwart-connect-{target}", cmd)
        wait_port(port, timeout=30, proc=p)
        self.connects[target] = (p, port)
        return port

    def connect_many(self, target, n):
        """n more `torwart connect` listeners for `target` (one forwarder serves at most 64
        connections); returns all their ports."""
        ports = []
        for i in range(n):
            port = free_port()
            cmd = [self.cli, "--config-dir", self.dir / "cli", "connect", f"{self.SITE}/{target}",
                   "--local-port", port, "--grant", self.grants[target]]
            p = self.procs.start(f"torwart-connect-{target}-{i}", cmd)
            self.connects[f"{target}#{i}"] = (p, port)
            ports.append((p, port))
            if i == 0:
                # The first one fetches the grant certificate; the others reuse it (started at
                # once, they would race on <config dir>/grants/ID.key and .pem).
                wait_port(port, timeout=60, proc=p)
        for p, port in ports:
            wait_port(port, timeout=60, proc=p)
        return [port for _, port in ports]

    def check_path(self, port, timeout=30):
        """One byte through the tunnel to the echo/first target proves it end to end."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"x")
            if not s.recv(1):
                raise RuntimeError("tunnel closed without data")

    def relay_pids(self):
        return [self.server.pid]

    def gateway_pids(self):
        return [self.agent.pid]

    def busy_pids(self):
        return [self.server.pid, self.agent.pid]

    def restart(self, probe_port, timeout=90):
        """Fresh torwartd and agent (same ports and state), then waits until a stream passes:
        the device's stored "online" may predate the restart."""
        self.procs.stop(self.agent)
        self.procs.stop(self.server)
        self.start_server()
        self.start_agent()
        deadline = time.time() + timeout
        while True:
            try:
                self.check_path(probe_port, timeout=10)
                return
            except (OSError, RuntimeError) as e:
                if time.time() > deadline:
                    raise RuntimeError(f"no stream after the restart: {e}") from e
                time.sleep(0.5)

    def stop(self):
        for p, _ in self.connects.values():
            self.procs.stop(p)
        self.connects = {}
        if self.agent is not None:
            self.procs.stop(self.agent)
        if self.server is not None:
            self.procs.stop(self.server)


# ------------------------------------------------------------------------------------------
# measurements

def iperf(port, seconds):
    p = run(["iperf3", "-c", "127.0.0.1", "-p", port, "-t", seconds, "-J"], check=False,
            timeout=seconds + 60)
    try:
        j = json.loads(p.stdout)
        s = j["end"]["sum_received"]
        return s["bits_per_second"] / 1e9, s["bytes"]
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"iperf3 failed: {p.stdout[-500:]} {p.stderr[-500:]}") from e


SOCKPERF_PCT = re.compile(r"--->\s+percentile\s+([\d.]+)\s*=\s*([\d.]+)")


def sockperf(port, size, seconds):
    p = run(["sockperf", "ping-pong", "--tcp", "-i", "127.0.0.1", "-p", port, "-m", size,
             "-t", seconds, "--full-rtt"], check=False, timeout=seconds + 60)
    pct = {float(a): float(b) for a, b in SOCKPERF_PCT.findall(p.stdout + p.stderr)}
    if 50.0 not in pct or 99.0 not in pct:
        raise RuntimeError(f"sockperf failed: {p.stdout[-800:]} {p.stderr[-500:]}")
    return pct[50.0], pct[99.0]


def first_byte(port, timeout=30):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    b = s.recv(1)
    dt = time.perf_counter() - t0
    s.close()
    if b != b"!":
        raise RuntimeError("no first byte")
    return dt


# ------------------------------------------------------------------------------------------
# benchmarks

class Bench:
    def __init__(self, args):
        self.args = args
        self.build = Path(args.build_dir).resolve()
        self.workdir = Path(tempfile.mkdtemp(prefix="torwart-bench-"))
        self.procs = Procs(self.workdir)
        self.targets = Targets(self.procs)
        self.pki = make_pki(self.workdir / "pki")
        self.torwart_error = None
        if args.pin:
            os.sched_setaffinity(0, {0})  # everything we start inherits CPU 0
        log("work dir", self.workdir)

    def close(self):
        self.procs.stop_all()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def torwart(self, targets):
        """A set-up torwart or None (the reason goes to self.torwart_error)."""
        if self.args.no_torwart:
            self.torwart_error = "skipped (--no-torwart)"
            return None
        tw = Torwart(self.procs, self.build, self.workdir)
        try:
            tw.setup(targets)
            return tw
        except Exception as e:  # the peers still run; the reason is reported
            self.torwart_error = str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
            log("torwart side unavailable:", e)
            tw.stop()
            return None

    def common(self, figure, **kw):
        out = {"id": figure["id"], "metric": figure["metric"]}
        out.update(kw)
        out["loadavg_1m"] = round(os.getloadavg()[0], 2)  # shared machine: how busy it was
        if self.torwart_error:
            out["torwart_error"] = self.torwart_error
        return out

    # ---- T1: one bulk stream
    def t1(self):
        a = self.args
        # One iperf3 server per side: a server is busy until the previous test's connections
        # have closed, and each path closes at its own pace.
        tports = {side: self.targets.start("iperf") for side in ("torwart", "haproxy", "ssh_j")}
        sides = {}
        tw = self.torwart({"iperf": tports["torwart"]})
        if tw:
            try:
                sides["torwart"] = tw.connect("iperf")
            except Exception as e:
                self.torwart_error = f"torwart connect: {e}"
                tw = None
        hap = HaproxyChain(self.procs, self.pki, self.workdir)
        sides["haproxy"] = hap.start(tports["haproxy"])
        ssh = SshJump(self.procs, self.workdir)
        ssh.start_servers()
        if a.pin:
            pin(ssh.relay_pids(), {1})
        sides["ssh_j"] = ssh.start(tports["ssh_j"])
        peers = {"torwart": tw, "haproxy": hap, "ssh_j": ssh}
        if a.pin:  # the relays (and the jump host's future children) on CPU 1, the rest on CPU 0
            for rl in peers.values():
                if rl is not None:
                    pin(rl.relay_pids(), {1})
        res = {k: {"gbit": [], "cpu_per_gb": [], "gw_cpu_per_gb": []} for k in sides}
        for r in range(a.pairs):
            for side, port in sides.items():
                settle([p for pr in peers.values() if pr is not None for p in pr.busy_pids()])
                meter = CpuMeter(peers[side].relay_pids)
                gw_meter = CpuMeter(peers[side].gateway_pids)
                meter.start()
                gw_meter.start()
                try:
                    gbit, nbytes = iperf(port, a.seconds)
                except RuntimeError as e:
                    log(f"T1 {side} round {r}: {e}")
                    for k in res[side]:
                        res[side][k].append(None)
                    continue
                cpu, gw_cpu = meter.stop(), gw_meter.stop()
                gb = nbytes / 1e9
                res[side]["gbit"].append(gbit)
                res[side]["cpu_per_gb"].append(cpu / gb)
                res[side]["gw_cpu_per_gb"].append(gw_cpu / gb)
                log(f"T1 round {r} {side}: {gbit:.3f} Gbit/s, relay {cpu / gb:.3f} CPU-s/GB, "
                    f"gateway {gw_cpu / gb:.3f} CPU-s/GB")
        fig = {"id": "T1"}
        mode = "R (relays pinned to CPU 1)" if a.pin else "W (unpinned)"
        self.emit_ratio_figure(fig, "throughput_gbit_s", res, "gbit", "Gbit/s",
                               {"ssh_j": 2.0, "haproxy": 0.8}, higher_better=True,
                               extra={"seconds": a.seconds, "mode": mode,
                                      "tool": "iperf3 -c 127.0.0.1 -p LOCAL -t S -J"})
        self.emit_ratio_figure(fig, "relay_cpu_s_per_gb", res, "cpu_per_gb", "CPU-s/GB",
                               {"haproxy": 1.0}, higher_better=False,
                               extra={"mode": mode,
                                      "relay": {"torwart": "torwartd", "haproxy": "haproxy #2",
                                                "ssh_j": "jump-host sshd and its children"}})
        self.emit_ratio_figure(fig, "gateway_cpu_s_per_gb", res, "gw_cpu_per_gb", "CPU-s/GB",
                               {"haproxy": None, "ssh_j": None}, higher_better=False,
                               extra={"mode": mode, "note": "informative, no goal",
                                      "gateway": {"torwart": "torwart-agent (inner TLS + recording)",
                                                  "haproxy": "haproxy #3",
                                                  "ssh_j": "gateway sshd and its children"}})

    def emit_ratio_figure(self, fig, metric, res, key, unit, goals, higher_better, extra=None):
        """Medians per side and the median of the per-round ratios torwart/peer."""
        out = self.common({"id": fig["id"], "metric": metric}, unit=unit, pairs=self.args.pairs)
        for side in ("torwart", "haproxy", "ssh_j"):
            if side in res:
                out[side] = rnd(median(res[side][key]), 4)
            else:
                out[side] = None
        for peer, goal in goals.items():
            ratios = []
            if "torwart" in res and peer in res:
                for t, p in zip(res["torwart"][key], res[peer][key]):
                    if t is not None and p:
                        ratios.append(t / p)
            r = median(ratios)
            out[f"ratio_vs_{peer}"] = rnd(r)
            if goal is None:
                continue
            out[f"goal_vs_{peer}"] = (">= " if higher_better else "<= ") + f"{goal}"
            out[f"met_vs_{peer}"] = None if r is None else (r >= goal if higher_better else r <= goal)
        if "haproxy" in res and "ssh_j" in res:
            rr = [h / s for h, s in zip(res["haproxy"][key], res["ssh_j"][key]) if h is not None and s]
            out["haproxy_vs_ssh_j"] = rnd(median(rr))
        if extra:
            out.update(extra)
        emit(out)

    # ---- L1: request/response latency added by the tunnel
    def l1(self):
        a = self.args
        tport = self.targets.start("sockperf")
        sides = {"direct": tport}
        tw = self.torwart({"sockperf": tport})
        if tw:
            try:
                sides["torwart"] = tw.connect("sockperf")
            except Exception as e:
                self.torwart_error = f"torwart connect: {e}"
        hap = HaproxyChain(self.procs, self.pki, self.workdir)
        sides["haproxy"] = hap.start(tport)
        ssh = SshJump(self.procs, self.workdir)
        ssh.start_servers()
        sides["ssh_j"] = ssh.start(tport)
        busy = [hap, ssh] + ([tw] if tw else [])
        for size in a.sizes:
            res = {k: {"p50": [], "p99": []} for k in sides}
            for r in range(a.pairs):
                for side, port in sides.items():
                    settle([p for pr in busy for p in pr.busy_pids()])
                    try:
                        p50, p99 = sockperf(port, size, a.seconds)
                    except RuntimeError as e:
                        log(f"L1 {side} {size} B round {r}: {e}")
                        p50 = p99 = None
                    res[side]["p50"].append(p50)
                    res[side]["p99"].append(p99)
                    log(f"L1 {size} B round {r} {side}: p50 {p50} us, p99 {p99} us")
            added = {}
            for side in sides:
                if side == "direct":
                    continue
                added[side] = {q: [None if v is None or d is None else v - d
                                   for v, d in zip(res[side][q], res["direct"][q])]
                               for q in ("p50", "p99")}
            fig = {"id": "L1"}
            for q, goals in (("p50", {"haproxy": 1.2, "ssh_j": 0.5}), ("p99", {})):
                self.emit_ratio_figure(fig, f"added_rtt_{q}_{size}B_us", added, q, "us",
                                       goals or {"haproxy": None, "ssh_j": None}, higher_better=False,
                                       extra={"direct_rtt_us": rnd(median(res["direct"][q]), 2),
                                              "seconds": a.seconds,
                                              "tool": f"sockperf ping-pong --tcp -m {size} --full-rtt"})

    # ---- S1: new tunnel, local connect -> first byte from the target
    def s1(self):
        a = self.args
        tport = self.targets.start("first")
        tw = self.torwart({"first": tport})
        tw_port = None
        if tw:
            try:
                tw_port = tw.connect("first")
            except Exception as e:
                self.torwart_error = f"torwart connect: {e}"
        hap = HaproxyChain(self.procs, self.pki, self.workdir)
        hport = hap.start(tport)
        ssh = SshJump(self.procs, self.workdir)
        ssh.start_servers()
        res = {"torwart": [], "haproxy": [], "ssh_j": []}
        # warm-up (page cache, first handshakes), not counted
        for fn in ([lambda: first_byte(tw_port)] if tw_port else []) + \
                  [lambda: first_byte(hport), lambda: ssh.cold_first_byte(tport)]:
            try:
                fn()
            except Exception as e:
                log("S1 warm-up:", e)
        n = a.pairs * a.s1_per_pair
        for i in range(n):
            if tw_port:
                try:
                    res["torwart"].append(first_byte(tw_port))
                except Exception as e:
                    log(f"S1 torwart sample {i}: {e}")
            res["haproxy"].append(first_byte(hport))
            res["ssh_j"].append(ssh.cold_first_byte(tport))
        ms = {k: [x * 1000 for x in v] for k, v in res.items()}
        out = self.common({"id": "S1", "metric": "connect_to_first_byte_ms"}, unit="ms", samples=n)
        for side in ("torwart", "haproxy", "ssh_j"):
            out[side] = {"p50": rnd(percentile(ms[side], 50)), "p99": rnd(percentile(ms[side], 99))} \
                if ms[side] else None
        def ratio(side, q):
            if not ms["torwart"] or not ms[side]:
                return None
            return rnd(percentile(ms["torwart"], q) / percentile(ms[side], q), 4)
        out["ratio_p50_vs_ssh_j"] = ratio("ssh_j", 50)
        out["goal_vs_ssh_j"] = "<= 0.1"
        out["met_vs_ssh_j"] = None if out["ratio_p50_vs_ssh_j"] is None else out["ratio_p50_vs_ssh_j"] <= 0.1
        out["ratio_p50_vs_haproxy"] = ratio("haproxy", 50)
        out["shapes"] = {"torwart": "`torwart connect` listening; new TCP connection -> first byte",
                         "haproxy": "chain running; new TCP connection -> first byte (forward dial)",
                         "ssh_j": "cold `ssh -J jump -W target gateway` process start -> first byte"}
        emit(out)

    # ---- M1: memory per idle relayed stream; agent idle RSS
    def m1(self):
        a = self.args
        tport = self.targets.start("echo")
        counts = a.streams
        tw = self.torwart({"echo": tport})
        tw_ports = []
        agent_idle = agent_idle_used = None
        if tw:
            time.sleep(2.0)
            agent_idle = proc_rss_kb(tw.agent.pid)  # connected, no stream yet
            try:
                # `torwart connect` serves at most 64 connections at once: enough listeners
                tw_ports = tw.connect_many("echo", -(-min(max(counts), 1024) // 60))
                tw.check_path(tw_ports[0])
                time.sleep(2.0)
                agent_idle_used = proc_rss_kb(tw.agent.pid)  # after one stream ended
            except Exception as e:
                self.torwart_error = f"torwart connect: {e}"
                tw = None
        for count in counts:
            res = {"torwart": [], "haproxy": []}
            retained = {"torwart": [], "haproxy": []}
            agent_per = []
            tw_skip = None
            if tw and count > 1024:
                tw_skip = "the agent serves at most 1024 streams (site.toml streams.max_streams)"
            for r in range(a.m1_rounds):
                for side in ("torwart", "haproxy"):
                    if side == "torwart" and (not tw or tw_skip):
                        continue
                    if side == "haproxy":
                        hap = HaproxyChain(self.procs, self.pki, self.workdir, maxconn=count + 100)
                        port = [hap.start(tport)]
                        relay_pid = hap.relay
                        # warm: one stream through, so per-stream growth excludes first-use costs
                    else:
                        if r > 0 or count != counts[0]:
                            tw.restart(tw_ports[0])  # fresh relay and agent each round, like haproxy
                        port = tw_ports
                        relay_pid = tw.server.pid
                    self.warm(port[0])
                    time.sleep(0.5)
                    before = proc_rss_kb(relay_pid)
                    ag_before = proc_rss_kb(tw.agent.pid) if side == "torwart" else 0
                    opener = subprocess.Popen(
                        [sys.executable, __file__, "_open", ",".join(map(str, port)), str(count),
                         str(a.concurrency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    line = opener.stdout.readline().split()
                    ok = int(line[1]) if len(line) >= 2 else 0
                    time.sleep(1.0)
                    after = proc_rss_kb(relay_pid)
                    if side == "torwart":
                        agent_per.append((proc_rss_kb(tw.agent.pid) - ag_before) / max(ok, 1))
                    opener.stdin.close()
                    opener.wait()
                    time.sleep(2.0)
                    closed = proc_rss_kb(relay_pid)
                    retained[side].append((closed - before) / max(ok, 1))
                    per = (after - before) / max(ok, 1)
                    log(f"M1 {count} round {r} {side}: {ok}/{count} streams, relay RSS {before} -> {after} kB, "
                        f"{per:.2f} kB/stream; {closed} kB after they closed")
                    res[side].append(per if ok == count else None)
                    if side == "haproxy":
                        hap.stop()
            out = {"torwart": res["torwart"], "haproxy": res["haproxy"]}
            r = [t / h for t, h in zip(out["torwart"], out["haproxy"]) if t is not None and h]
            o = self.common({"id": "M1", "metric": f"relay_rss_kb_per_idle_stream_{count}"}, unit="kB",
                            streams=count, rounds=a.m1_rounds,
                            torwart=rnd(median(res["torwart"]), 2), haproxy=rnd(median(res["haproxy"]), 2),
                            ratio_vs_haproxy=rnd(median(r)), goal_vs_haproxy="<= 0.5")
            o["met_vs_haproxy"] = None if o["ratio_vs_haproxy"] is None else o["ratio_vs_haproxy"] <= 0.5
            o["relay"] = {"torwart": "torwartd (VmRSS)", "haproxy": "haproxy #2 (VmRSS)"}
            o["retained_kb_per_stream_after_close"] = {k: rnd(median(v), 2) for k, v in retained.items()}
            if tw_skip:
                o["torwart_skipped"] = tw_skip
            if agent_per:
                o["agent_rss_kb_per_stream"] = rnd(median(agent_per), 2)  # informative, no goal
            emit(o)
        o = self.common({"id": "M1", "metric": "agent_idle_rss_mb"}, unit="MB",
                        torwart=rnd(agent_idle / 1024 if agent_idle else None, 2), goal="<= 10",
                        after_one_stream=rnd(agent_idle_used / 1024 if agent_idle_used else None, 2))
        o["met"] = None if agent_idle is None else agent_idle / 1024 <= 10
        emit(o)

    def warm(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.settimeout(30)
                s.sendall(b"w")
                s.recv(1)
        except OSError as e:
            log("warm-up stream failed:", e)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_target":
        return target_server_main(sys.argv[2], int(sys.argv[3]))
    if len(sys.argv) > 1 and sys.argv[1] == "_open":
        return open_streams_main([int(x) for x in sys.argv[2].split(",")], int(sys.argv[3]),
                                 int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=str.lower, choices=["t1", "l1", "s1", "m1", "all"])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build/bench-tun"))
    ap.add_argument("--pairs", type=int, default=5, help="rounds A B C ...; medians over them (>= 5)")
    ap.add_argument("--seconds", type=int, default=5, help="T1/L1: seconds per run")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 1024],
                    help="L1 message sizes (bytes)")
    ap.add_argument("--s1-per-pair", type=int, default=4, help="S1 samples per side per pair")
    ap.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1000],
                    help="M1 idle stream counts, e.g. 1000,9000 (each relay holds 2 sockets per "
                         "stream, so the fd limit caps it: ulimit -n / 2)")
    ap.add_argument("--m1-rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=64, help="M1: connects in flight")
    ap.add_argument("--pin", action="store_true",
                    help="T1 mode R: relays on CPU 1, everything else on CPU 0 (default: unpinned)")
    ap.add_argument("--no-torwart", action="store_true", help="run the peers only")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = ap.parse_args()
    benches = ["t1", "l1", "s1", "m1"] if args.bench == "all" else [args.bench]
    for b in benches:
        bench = Bench(args)
        try:
            getattr(bench, b)()
        finally:
            bench.close()


if __name__ == "__main__":
    main()
