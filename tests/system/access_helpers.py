"""Helpers for the policy and access scenarios: users with a confirmed second factor (TOTP,
RFC 6238, computed here), the example policy and a variant without windows for real-time tests,
and a loopback webhook receiver that checks signatures."""
import base64
import hashlib
import hmac
import json
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from conftest import ROOT, Cli

EXAMPLE = ROOT / "api" / "examples" / "policy.jsonc"
PASSWORD = "a long test password 42"


def totp(secret_b32, at=None, step=30, digits=6):
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(code).zfill(digits)


def user_with_mfa(admin: Cli, tmp: Path, name: str, role: str) -> Cli:
    """Creates `name` through `torwart user add`, logs in, sets a password and confirms TOTP, so
    the session counts as MFA."""
    if name != "admin":
        out = admin.run("user", "add", name, "--role", role, json_out=True)
        otp = out["one_time_password"]
        cli = Cli(admin.server, tmp / ("cli-" + re.sub(r"[^a-z0-9]", "_", name)))
        cli.login(name, otp)
        cli.run("passwd", input=f"{otp}\n{PASSWORD}\n")
    else:
        cli = admin
    secret = cli.run("mfa", "enroll", json_out=True)["secret"]
    cli.run("mfa", "confirm", totp(secret))
    return cli


def realtime_policy():
    """The example policy without maintenance windows (tests run at any hour), with break-glass
    for the directory role `technician`, and without the tests that depend on a window."""
    text = EXAMPLE.read_text()
    text = re.sub(r'"window": "[a-z-]+",\s*', "", text)
    text = text.replace('"role:ot-emergency"', '"role:technician"')
    text = text.replace('"roles": {', '"roles": {\n    "technician": {},', 1)
    text = text.replace('"roles": ["ot-emergency"]', '"roles": ["technician"]')
    lines = text.splitlines()
    out, skip = [], 0
    for line in lines:
        if skip:
            skip -= 1
            continue
        if "2026-03-31T10:00:00" in line or "2026-05-04T12:00:00" in line:
            skip = 1  # each of these tests spans two lines
            continue
        out.append(line)
    text = "\n".join(out)
    return text


class Receiver:
    """A webhook receiver on loopback. The first `fail_first` deliveries get a 503."""

    def __init__(self, secret: str, fail_first=0):
        self.secret = secret.encode()
        self.events = []
        self.bad_signatures = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                want = "sha256=" + hmac.new(outer.secret, body, hashlib.sha256).hexdigest()
                with outer.lock:
                    if outer.fail_first > 0:
                        outer.fail_first -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    if not hmac.compare_digest(want, self.headers.get("x-torwart-signature", "")):
                        outer.bad_signatures += 1
                    else:
                        outer.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, pred, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                hits = [e for e in self.events if pred(e)]
            if hits:
                return hits
            time.sleep(0.1)
        raise AssertionError(f"no matching webhook; got {[e['event'] for e in self.events]}")

    def close(self):
        self.httpd.shutdown()
