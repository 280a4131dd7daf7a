"""tools/plcsim, the simulated PLC: mbpoll (a real Modbus/TCP master) reads registers that change
and writes registers that are kept; several clients at once; garbage never kills it; SIGTERM
stops it cleanly."""
import re
import shutil
import socket
import struct
import time

import pytest

from conftest import PLCSIM, run
from plcsim_helpers import Plcsim, modbus_request, recv_exact

pytestmark = pytest.mark.skipif(not PLCSIM.exists(), reason="plcsim not built")
MBPOLL = shutil.which("mbpoll") or "/usr/bin/mbpoll"


def mbpoll(port, *args):
    p = run([MBPOLL, "-m", "tcp", "-a", "1", "-p", str(port), "-1", *args, "127.0.0.1"], timeout=20)
    return {int(k): int(v) for k, v in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", p.stdout, re.M)}


def test_mbpoll_reads_live_registers_and_writes_are_kept():
    with Plcsim() as plc:
        first = mbpoll(plc.port, "-t", "4", "-r", "1", "-c", "4")
        assert sorted(first) == [1, 2, 3, 4]
        assert 190 <= first[2] <= 240            # temperature, °C x10
        assert 1000 <= first[3] <= 1026          # pressure, hPa
        time.sleep(2.2)
        second = mbpoll(plc.port, "-t", "4", "-r", "1", "-c", "4")
        assert second[1] >= first[1] + 2         # the uptime counter moves every second
        # Input registers mirror the live values.
        assert sorted(mbpoll(plc.port, "-t", "3", "-r", "1", "-c", "10")) == list(range(1, 11))

        # Write two holding registers (mbpoll references are 1-based: 21 = address 20) ...
        run([MBPOLL, "-m", "tcp", "-a", "1", "-p", str(plc.port), "-t", "4", "-r", "21", "-1",
             "127.0.0.1", "4711", "815"], timeout=20)
        time.sleep(1.2)  # ... they survive the next tick
        assert mbpoll(plc.port, "-t", "4", "-r", "21", "-c", "2") == {21: 4711, 22: 815}
        # A coil, written and read back.
        run([MBPOLL, "-m", "tcp", "-a", "1", "-p", str(plc.port), "-t", "0", "-r", "5", "-1",
             "127.0.0.1", "1"], timeout=20)
        assert mbpoll(plc.port, "-t", "0", "-r", "5", "-c", "1") == {5: 1}

        log = plc.log()
        assert {"function": 3, "addr": 0, "count": 4, "outcome": "ok"}.items() <= log[0].items()
        assert any(e["function"] == 16 and e["addr"] == 20 and e["count"] == 2 for e in log)
        assert plc.stop() == 0


def test_unit_id_device_identification_and_exceptions():
    with Plcsim("127.0.0.1:0", "--unit", "3") as plc:
        assert modbus_request(plc.port, b"\x03\x00\x00\x00\x01", unit=3)[:2] == b"\x03\x02"
        assert modbus_request(plc.port, b"\x03\x00\x00\x00\x01", unit=7) == b"\x83\x0b"
        # Out of range and unsupported function: Modbus exceptions, not disconnects.
        assert modbus_request(plc.port, b"\x03\x00\x63\x00\x02", unit=3) == b"\x83\x02"
        assert modbus_request(plc.port, b"\x08\x00\x00\x00\x00", unit=3) == b"\x88\x01"
        ident = modbus_request(plc.port, b"\x2b\x0e\x01\x00", unit=3)
        assert ident[:2] == b"\x2b\x0e" and b"torwart" in ident and b"plcsim" in ident


def test_several_clients_and_garbage_never_kill_it():
    with Plcsim() as plc:
        # Five clients connected at once, each answered on its own connection.
        socks = [socket.create_connection(("127.0.0.1", plc.port), timeout=5) for _ in range(5)]
        for i, s in enumerate(socks):
            s.sendall(struct.pack(">HHHB", 100 + i, 0, 6, 1) + b"\x03\x00\x0a\x00\x01")
        for i, s in enumerate(socks):
            tx, proto, length, unit = struct.unpack(">HHHB", recv_exact(s, 7))
            assert (tx, proto, unit) == (100 + i, 0, 1)
            assert recv_exact(s, length - 1)[:2] == b"\x03\x02"
        # Garbage of every kind: random bytes, a huge length, a protocol id, a half frame.
        bad = [bytes(range(256)) * 4, struct.pack(">HHHB", 1, 0, 0xFFFF, 1) + b"\x03" * 300,
               struct.pack(">HHHB", 1, 77, 6, 1) + b"\x03\x00\x00\x00\x01", b"\x00\x01\x00",
               struct.pack(">HHHB", 1, 0, 2, 1) + b"\x10", b"\x00" * 7]
        for payload in bad:
            with socket.create_connection(("127.0.0.1", plc.port), timeout=5) as s:
                s.sendall(payload)
                s.settimeout(1.5)
                try:
                    s.recv(1024)
                except (socket.timeout, ConnectionResetError):
                    pass
        for s in socks:  # the earlier clients are still served
            s.sendall(struct.pack(">HHHB", 7, 0, 6, 1) + b"\x03\x00\x00\x00\x01")
            assert recv_exact(s, 7)[:2] == b"\x00\x07"
            recv_exact(s, 4)
            s.close()
        assert plc.alive()
        assert sorted(mbpoll(plc.port, "-t", "4", "-r", "1", "-c", "2")) == [1, 2]
        assert plc.stop() == 0
        assert "stopped" in plc.stderr_text()


def test_bad_arguments_and_help():
    assert "holding" in run([PLCSIM, "--help"]).stdout
    p = run([PLCSIM, "--listen", "nonsense"], check=False, timeout=10)
    assert p.returncode != 0 and "HOST:PORT" in p.stderr
    with Plcsim() as plc:  # a taken port is a clear error
        p = run([PLCSIM, "--listen", f"127.0.0.1:{plc.port}"], check=False, timeout=10)
        assert p.returncode != 0 and "cannot listen" in p.stderr
