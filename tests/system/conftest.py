"""Fixtures for multi-process scenarios: a real torwartd on a free loopback port, the real CLI
and agent, and off-the-shelf clients (openssl, curl). Every test gets its own data directory."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TORWART_BUILD_DIR", ROOT / "build" / "dev"))
TORWARTD = BUILD / "apps" / "torwartd" / "torwartd"
TORWART = BUILD / "apps" / "torwart" / "torwart"
AGENT = BUILD / "apps" / "torwart-agent" / "torwart-agent"
PLCSIM = BUILD / "tools" / "plcsim" / "plcsim"
NEW_ADMIN_PASSWORD = "correct horse battery staple"


class Server:
    def __init__(self, tmp: Path, extra_args=(), config: str | None = None):
        self.tmp = tmp
        self.data_dir = tmp / "server"
        self.args = [str(TORWARTD), "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
                     "--log-level", "warn", *extra_args]
        if "--broker-listen" not in self.args:  # the managed MQTT broker: a free port per test
            self.args += ["--broker-listen", "127.0.0.1:0"]
        if "--relay-listen" not in self.args:  # the tunnel relay: a free port per test
            self.args += ["--relay-listen", "127.0.0.1:0"]
        if config is not None:
            cfg = tmp / "torwartd.toml"
            cfg.write_text(config)
            self.args += ["--config", str(cfg)]
        self.proc = None
        self.stdout_path = tmp / "torwartd.stdout"
        self.stderr_path = tmp / "torwartd.stderr"
        self.admin_password = None

    def start(self, timeout=20):
        if getattr(self, "port", None):  # a restart keeps the port, so sessions stay valid
            self.args[self.args.index("--listen") + 1] = f"127.0.0.1:{self.port}"
        endpoint = self.data_dir / "endpoint.json"
        if endpoint.exists():
            endpoint.unlink()
        self.proc = subprocess.Popen(self.args, stdout=open(self.stdout_path, "a"),
                                     stderr=open(self.stderr_path, "a"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("torwartd exited: " + self.stderr_path.read_text())
            if endpoint.exists() and "ready" in self.stdout_path.read_text():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("torwartd did not start in time")
        ep = json.loads(endpoint.read_text())
        self.url, self.ca = ep["url"], ep["ca"]
        self.port = int(self.url.rsplit(":", 1)[1])
        m = re.search(r"one-time password:\s+(\S+)", self.stdout_path.read_text())
        if m and self.admin_password is None:
            self.admin_password = m.group(1)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def db(self, sql, *params):
        import sqlite3
        con = sqlite3.connect(str(self.data_dir / "torwart.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


class Cli:
    def __init__(self, server: Server, config_dir: Path):
        self.server = server
        self.config_dir = config_dir

    def run(self, *args, input=None, check=True, json_out=False):
        cmd = [str(TORWART), "--config-dir", str(self.config_dir)]
        if json_out:
            cmd.append("--json")
        cmd += [str(a) for a in args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        if json_out and p.returncode == 0:
            return json.loads(p.stdout)
        return p

    def login(self, user, password):
        return self.run("--server", self.server.url, "--ca", self.server.ca, "login", "--user", user,
                        "--password-stdin", input=password + "\n")


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path).start()
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    made = []

    def make(*args, config=None, subdir="srv"):
        d = tmp_path / subdir
        d.mkdir(exist_ok=True)
        s = Server(d, args, config).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def admin_cli(server: Server, tmp: Path) -> Cli:
    cli = Cli(server, tmp / "cli-admin")
    cli.login("admin", server.admin_password)
    cli.run("passwd", input=f"{server.admin_password}\n{NEW_ADMIN_PASSWORD}\n")
    return cli


@pytest.fixture
def admin(server, tmp_path):
    return admin_cli(server, tmp_path)


def run(cmd, check=True, timeout=60, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def wait_for(pred, timeout=20, step=0.1, what="condition"):
    """Polls pred() until it returns something truthy (returned) or `timeout` s pass."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- identity helpers: TOTP codes and users of any role (with a second factor by default) ---

def totp_code(secret_b32: str, step: int | None = None, digits: int = 6) -> str:
    """RFC 6238 code (SHA-1, 30 s) of `secret_b32` for `step` (default: the current step)."""
    import base64
    import hashlib
    import hmac
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    if step is None:
        step = int(time.time()) // 30
    mac = hmac.new(key, step.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


class UserCli(Cli):
    """A Cli logged in as a user made by `make_user`. Knows its password and TOTP secret, and
    which time step it used last (the server never accepts a step twice)."""

    def __init__(self, server, config_dir, name, role):
        super().__init__(server, config_dir)
        self.name, self.role = name, role
        self.password = None
        self.totp_secret = None
        self.last_step = -1

    def next_code(self) -> str:
        """A code the server will accept: the current step, or the next one if the current one
        was used (within the ±1 window); waits for a new step only if even that was used."""
        while True:
            now = int(time.time()) // 30
            step = max(now, self.last_step + 1)
            if step <= now + 1:
                self.last_step = step
                return totp_code(self.totp_secret, step)
            time.sleep(30 - time.time() % 30 + 0.1)

    def relogin(self, check=True):
        args = ["--server", self.server.url, "--ca", self.server.ca, "login", "--user", self.name,
                "--password-stdin"]
        if self.totp_secret:
            args += ["--totp", self.next_code()]
        return self.run(*args, input=self.password + "\n", check=check)

    def token(self) -> str:
        return json.loads((self.config_dir / "session.json").read_text())["token"]


@pytest.fixture
def make_user(server, admin, tmp_path):
    """make_user(role, mfa=True, name=None, organisation="") -> a logged-in UserCli whose
    session passed the second factor (mfa=True) or not (mfa=False)."""
    counter = [0]

    def make(role, mfa=True, name=None, organisation=""):
        counter[0] += 1
        name = name or f"{role}{counter[0]}"
        args = ["user", "add", name, "--role", role]
        if organisation:
            args += ["--organisation", organisation]
        one_time = admin.run(*args, json_out=True)["one_time_password"]
        cli = UserCli(server, tmp_path / f"cli-{name}", name, role)
        cli.password = f"{name} has a long password"
        cli.login(name, one_time)
        cli.run("passwd", input=f"{one_time}\n{cli.password}\n")
        if mfa:
            cli.totp_secret = cli.run("mfa", "enroll", json_out=True)["secret"]
            cli.run("mfa", "confirm", cli.next_code())  # confirming upgrades this session
        return cli

    return make
