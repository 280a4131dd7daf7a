"""Issue 5, server side of recordings and agent events: a gateway uploads a signed recording with
its device certificate (curl, PUT /api/v1/recordings/{stream}); `torwart recording list/show`
list it and show it decoded after verifying it locally; one flipped byte in the stored file
makes `recording show` report TAMPERED (exit 4); other certificates are refused. Agent events
published with the device certificate (paho) become audit events, bad ones device.bad_message.

The recordings are written by torwart-recording-tool (the real RecordingWriter, signed with the
device key); the tunnel session each upload refers to is put into tunnel_sessions directly, as
the relay would have (the whole tunnel path is test_tunnel.py's job)."""
import json
import time
from pathlib import Path

import pytest

from conftest import BUILD, run
from test_control_server import Peer, enroll, ports, wait_for

TOOL = BUILD / "libs" / "tunnel" / "torwart-recording-tool"

# Modbus/TCP: read 3 holding registers from 0 (FC 3) and its answer; a write (FC 6) refused with
# exception 01 by the gateway's guard.
READ_REQ = "000100000006010300000003"
READ_RES = "000100000009010306000a000b000c"
WRITE_EXC = "000200000003018601"


def open_session(server, stream, device_id, user, grant="ar-0123456789ab", target="plc1"):
    import sqlite3
    now_us = int(time.time() * 1e6)
    con = sqlite3.connect(str(server.data_dir / "torwart.db"), timeout=10)
    try:
        with con:
            con.execute("INSERT INTO tunnel_sessions(id, grant_id, user_name, device_id, site, "
                        "target, client, opened_us, closed_us, end_reason) VALUES(?, ?, ?, ?, "
                        "'plant-north', ?, '127.0.0.1:1', ?, ?, 'closed')",
                        (stream, grant, user, device_id, target, now_us - 5_000_000, now_us))
    finally:
        con.close()


def make_recording(tmp: Path, key, device_id, stream, user, *extra):
    out = tmp / f"{stream}.{len(list(tmp.glob('*.rec')))}.rec"
    run([TOOL, "--key", key, "--out", out, "--stream", stream, "--device", device_id,
         "--user", user, "--grant", "ar-0123456789ab", "--site", "plant-north",
         "--target", "plc1", "--protocol", "modbus", *extra])
    return out


def upload(server, stream, body: Path, cert=None, key=None):
    """PUT with curl; returns (HTTP status, parsed JSON body or None)."""
    args = ["curl", "-sS", "--cacert", server.ca, "-X", "PUT", "--data-binary", f"@{body}",
            "-H", "Content-Type: application/octet-stream", "-w", "\n%{http_code}",
            f"{server.url}/api/v1/recordings/{stream}"]
    if cert:
        args[1:1] = ["--cert", str(cert), "--key", str(key)]
    p = run(args, check=False)
    text, _, code = p.stdout.rpartition("\n")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    return int(code or 0), doc


def first_chunk_offset(data: bytes) -> int:
    """Where chunk 1's compressed payload starts (docs/design/recording.md, file format)."""
    meta_len = int.from_bytes(data[8:12], "big")
    return 12 + meta_len + 17


def trailer_offset(data: bytes) -> int:
    """Where the trailer ('T' ...) starts: after the header and every chunk."""
    pos = 12 + int.from_bytes(data[8:12], "big")
    while data[pos:pos + 1] == b"C":
        pos += 17 + int.from_bytes(data[pos + 1:pos + 5], "big") + 32
    assert data[pos:pos + 1] == b"T"
    return pos


def audit(server, type_):
    return server.db("SELECT actor, target, result, reason, details FROM audit WHERE type = ?",
                     type_)


@pytest.fixture
def gateway(server, admin, tmp_path):
    dev_id, cert, key = enroll(server, admin, tmp_path, "gw-rec")
    return dev_id, cert, key


def test_upload_list_show_and_tampering(server, admin, make_user, gateway, tmp_path):
    dev_id, cert, key = gateway
    tech = make_user("technician", name="tech1")
    other = make_user("technician", name="tech2")
    stream = "st-00000000000000a1"
    open_session(server, stream, dev_id, "tech1")
    rec = make_recording(tmp_path, key, dev_id, stream, "tech1",
                         "--item", f"to:{READ_REQ}", "--item", f"from:{READ_RES}",
                         "--item", 'event:refused:{"function":6,"reason":"needs modbus:write"}',
                         "--item", f"from:{WRITE_EXC}")

    status, doc = upload(server, stream, rec, cert, key)
    assert status == 201, doc
    assert doc["status"] == "verified" and doc["user"] == "tech1" and doc["device"] == "gw-rec"
    stored = server.data_dir / "recordings" / f"{stream}.rec"
    assert stored.read_bytes() == rec.read_bytes()
    assert stored.stat().st_mode & 0o777 == 0o600
    # A retry of the same upload is fine; different bytes for the same stream are not.
    assert upload(server, stream, rec, cert, key)[0] == 200
    rec2 = make_recording(tmp_path, key, dev_id, stream, "tech1", "--item", f"to:{READ_REQ}")
    assert upload(server, stream, rec2, cert, key)[0] == 409
    assert stored.read_bytes() == rec.read_bytes()
    assert len(audit(server, "recording.conflict")) == 1
    ev = audit(server, "recording.stored")
    assert len(ev) == 1 and ev[0][0] == dev_id and ev[0][1] == stream and ev[0][2] == "success"

    # Listing: admin sees it, its technician sees it, another technician does not.
    listed = admin.run("recording", "list", "--json", json_out=False)
    assert json.loads(listed.stdout)["recordings"][0]["id"] == stream
    assert [r["id"] for r in tech.run("recording", "list", json_out=True)["recordings"]] == [stream]
    assert other.run("recording", "list", json_out=True)["recordings"] == []
    assert other.run("recording", "show", stream, check=False).returncode != 0
    assert stream in admin.run("recording", "list").stdout

    # Show: verified locally and decoded (the reads, the refused write).
    shown = tech.run("recording", "show", stream, "--out", tmp_path / "copy.rec")
    assert "verified" in shown.stdout
    assert stream in shown.stdout
    assert "read holding registers addr 0 count 3" in shown.stdout
    assert "values [10, 11, 12]" in shown.stdout
    assert "exception 01 (illegal function)" in shown.stdout
    assert (tmp_path / "copy.rec").read_bytes() == rec.read_bytes()
    js = admin.run("recording", "show", stream, json_out=True)
    assert js["status"] == "verified" and js["device_id"] == dev_id
    assert js["recording"]["meta"]["protocol"] == "modbus"
    assert len(js["recording"]["items"]) == 4
    assert len(audit(server, "recording.read")) >= 2

    # One flipped byte in the stored file: TAMPERED, exit 4. In a chunk, and in the trailer
    # (which the reader alone would take for a recording cut off before it was signed: the CLI
    # knows it was verified complete at upload).
    original = stored.read_bytes()
    for offset in (first_chunk_offset(original) + 2, trailer_offset(original),
                   trailer_offset(original) + 3, len(original) - 10):
        data = bytearray(original)
        data[offset] ^= 0x01
        stored.write_bytes(bytes(data))
        p = admin.run("recording", "show", stream, check=False)
        assert p.returncode == 4, (offset, p.stdout + p.stderr)
        assert f"recording {stream} is TAMPERED" in p.stderr
        p = admin.run("recording", "show", stream, "--json", check=False)
        assert p.returncode == 4 and json.loads(p.stdout)["status"] == "tampered"


def test_tampered_and_incomplete_uploads_are_kept_and_flagged(server, admin, gateway, tmp_path):
    dev_id, cert, key = gateway
    s1, s2 = "st-00000000000000b1", "st-00000000000000b2"
    open_session(server, s1, dev_id, "tech1")
    open_session(server, s2, dev_id, "tech1")
    bad = make_recording(tmp_path, key, dev_id, s1, "tech1", "--item", "to:" + "ab" * 4000)
    data = bytearray(bad.read_bytes())
    data[first_chunk_offset(data) + 2] ^= 0x40
    bad.write_bytes(bytes(data))
    status, doc = upload(server, s1, bad, cert, key)
    assert status == 201 and doc["status"] == "tampered_on_upload", doc
    assert (server.data_dir / "recordings" / f"{s1}.rec").read_bytes() == bytes(data)
    ev = audit(server, "recording.stored")
    assert ev[0][2] == "failure" and "tampered" in ev[0][3]
    p = admin.run("recording", "show", s1, check=False)
    assert p.returncode == 4 and "TAMPERED" in p.stderr

    cut = make_recording(tmp_path, key, dev_id, s2, "tech1", "--item", f"to:{READ_REQ}",
                         "--no-finish")
    status, doc = upload(server, s2, cut, cert, key)
    assert status == 201 and doc["status"] == "incomplete", doc
    p = admin.run("recording", "show", s2, check=False)
    assert p.returncode == 0, p.stderr
    assert "incomplete" in p.stderr


def test_uploads_need_the_gateway_certificate_of_the_session(server, admin, gateway, tmp_path):
    dev_id, cert, key = gateway
    other_id, other_cert, other_key = enroll(server, admin, tmp_path, "gw-other")
    stream = "st-00000000000000c1"
    open_session(server, stream, dev_id, "tech1")
    rec = make_recording(tmp_path, key, dev_id, stream, "tech1", "--item", f"to:{READ_REQ}")
    # No certificate, a valid certificate of ours that is not a device's (torwartd's own broker
    # identity), another gateway, a stream without a session.
    assert upload(server, stream, rec)[0] == 401
    broker = server.data_dir / "broker"
    assert upload(server, stream, rec, broker / "client.pem", broker / "client.key")[0] == 401
    assert upload(server, stream, rec, other_cert, other_key)[0] == 403
    assert upload(server, "st-00000000000000c2", rec, cert, key)[0] == 404
    # A person's bearer token is no device certificate.
    token = json.loads((admin.config_dir / "session.json").read_text())["token"]
    p = run(["curl", "-sS", "--cacert", server.ca, "-X", "PUT", "--data-binary", f"@{rec}",
             "-H", f"Authorization: Bearer {token}", "-o", "/dev/null", "-w", "%{http_code}",
             f"{server.url}/api/v1/recordings/{stream}"])
    assert p.stdout == "401"
    # A revoked gateway is refused.
    admin.run("device", "revoke", "gw-rec", "--reason", "keyCompromise")
    assert upload(server, stream, rec, cert, key)[0] == 403
    assert len(audit(server, "recording.upload_refused")) == 6
    assert admin.run("recording", "list", json_out=True)["recordings"] == []


def test_agent_events_are_audited_and_bad_ones_refused(server, admin, gateway):
    dev_id, cert, key = gateway
    dev = Peer(server, cert, key, dev_id, ports(server)["device"]).start()
    topic = f"torwart/d/{dev_id}/event"
    dev.publish(topic, json.dumps({
        "v": 1, "type": "tunnel.request_refused", "ts": int(time.time()),
        "stream": "st-00000000000000d1", "grant": "ar-0123456789ab", "user": "tech1",
        "target": "plc1",
        "detail": {"function": 6, "unit": 1, "transaction": 2,
                   "reason": "function 6 needs scope modbus:write"}}))
    dev.publish(topic, json.dumps({"v": 1, "type": "tunnel.teleport", "ts": int(time.time()),
                                   "stream": "st-00000000000000d1"}))
    wait_for(lambda: audit(server, "agent.tunnel.request_refused"), what="the agent event")
    actor, target, result, reason, details = audit(server, "agent.tunnel.request_refused")[0]
    assert actor == dev_id and target == "st-00000000000000d1" and result == "failure"
    assert reason == "function 6 needs scope modbus:write"
    d = json.loads(details)
    assert d["detail"]["function"] == 6 and d["user"] == "tech1" and d["device"] == "gw-rec"
    bad = wait_for(lambda: [r for r in audit(server, "device.bad_message") if r[1] == topic],
                   what="device.bad_message for the unknown event type")
    assert "unknown event type" in bad[0][3]
    # Another device's event topic is not writable (the plugin's ACL): nothing is recorded.
    dev.publish("torwart/d/0f8fad5b-d9cb-469f-a165-70867728950e/event",
                json.dumps({"v": 1, "type": "consent.changed", "ts": 1, "detail": {"on": True}}))
    time.sleep(1)
    assert audit(server, "agent.consent.changed") == []
    dev.stop()
