"""Starts tools/plcsim (the simulated Modbus/TCP PLC) for tests: `with Plcsim() as plc:` gives
plc.port, plc.stderr_text() (the request log) and stops it with SIGTERM. Also a minimal Modbus/TCP
client over a raw socket, for requests mbpoll cannot make (device identification, garbage)."""
import json
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import PLCSIM


class Plcsim:
    def __init__(self, listen="127.0.0.1:0", *args, prefix=()):
        self.listen = listen
        self.args = list(args)
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", "ot"]
        self.proc = None
        self.port = None
        self._err = None

    def start(self, timeout=10):
        self._err = tempfile.NamedTemporaryFile(prefix="plcsim-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            self.prefix + [str(PLCSIM), "--listen", self.listen, "--json", *self.args],
            stdout=subprocess.PIPE, stderr=self._err, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("plcsim did not start: " + self.stderr_text())
        self.info = json.loads(line)
        self.port = self.info["port"]
        return self

    def stderr_text(self):
        return Path(self._err.name).read_text() if self._err else ""

    def log(self):
        """The request log as a list of dicts (one per request)."""
        out = []
        for line in self.stderr_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def modbus_request(port, pdu: bytes, unit=1, tx=1, host="127.0.0.1", timeout=3) -> bytes:
    """Sends one request ADU and returns the response PDU (function code + data)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">HHHB", tx, 0, len(pdu) + 1, unit) + pdu)
        head = recv_exact(s, 7)
        rtx, proto, length, runit = struct.unpack(">HHHB", head)
        assert (rtx, proto, runit) == (tx, 0, unit), head
        return recv_exact(s, length - 1)


def recv_exact(s, n):
    buf = b""
    deadline = time.time() + 5
    while len(buf) < n and time.time() < deadline:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf
