"""Issue 2 acceptance: enrollment with off-the-shelf clients (openssl cmp, curl EST), renewal,
revocation and the CRL, against a real torwartd."""
import base64
import json
import re
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import run


def add_device(admin, name, *extra):
    return admin.run("device", "add", name, "--site", "plant-north", *extra, json_out=True)


def cmp_args(server, *args):
    return ["openssl", "cmp", "-server", f"127.0.0.1:{server.port}", "-path", ".well-known/cmp",
            "-tls_used", "-tls_trusted", server.ca, "-batch", "-verbosity", "4", *args]


def cmp_ir(server, tmp: Path, ref, secret, name="dev", check=True):
    key = tmp / f"{name}.key"
    if not key.exists():
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key])
    cert = tmp / f"{name}.pem"
    p = run(cmp_args(server, "-cmd", "ir", "-ref", ref, "-secret", f"pass:{secret}",
                     "-recipient", "/CN=torwart Issuing CA", "-trusted", server.ca,
                     "-newkey", key, "-subject", "/CN=ignored",
                     "-certout", cert, "-chainout", tmp / f"{name}.chain.pem"), check=check)
    return p, key, cert


def serial_of(cert: Path) -> str:
    out = run(["openssl", "x509", "-in", cert, "-noout", "-serial"]).stdout
    return out.strip().split("=", 1)[1].lower().lstrip("0") or "0"


def fetch(server, path, data=None, headers=None, cert=None):
    ctx = ssl.create_default_context(cafile=server.ca)
    if cert:
        ctx.load_cert_chain(*cert)
    req = urllib.request.Request(server.url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def crl_serials(server, tmp: Path):
    status, der = fetch(server, "/pki/crl")
    assert status == 200
    f = tmp / "crl.der"
    f.write_bytes(der)
    text = run(["openssl", "crl", "-inform", "DER", "-in", f, "-noout", "-text"]).stdout
    # CRL must verify against the issuing CA.
    run(["openssl", "crl", "-inform", "DER", "-in", f, "-noout", "-CAfile", server.ca])
    return {s.lower().lstrip("0") for s in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text)}


def audit_types(server):
    return [r[0] for r in server.db("SELECT type FROM audit ORDER BY seq")]


def test_cmp_ir_with_one_time_secret(server, admin, tmp_path):
    dev = add_device(admin, "gw-1", "--tag", "ot-gateway")
    ref, secret = dev["enrollment"]["reference"], dev["enrollment"]["secret"]

    p, key, cert = cmp_ir(server, tmp_path, ref, secret)
    assert cert.exists(), p.stderr
    run(["openssl", "verify", "-CAfile", server.ca, cert])
    text = run(["openssl", "x509", "-in", cert, "-noout", "-text"]).stdout
    assert f"URI:urn:torwart:device:{dev['id']}" in text
    assert "TLS Web Client Authentication" in text
    assert f"CN = {dev['id']}" in text

    # The same secret a second time is refused.
    p2, _, cert2 = cmp_ir(server, tmp_path, ref, secret, name="again", check=False)
    assert p2.returncode != 0 and not cert2.exists()
    # A wrong secret is refused.
    dev2 = add_device(admin, "gw-2")
    p3, _, cert3 = cmp_ir(server, tmp_path, dev2["enrollment"]["reference"], "wrong-secret",
                          name="wrong", check=False)
    assert p3.returncode != 0 and not cert3.exists()

    shown = admin.run("device", "show", "gw-1", json_out=True)
    assert shown["status"] == "enrolled"
    assert shown["certificate"]["serial"] == serial_of(cert)
    types = audit_types(server)
    assert "pki.cmp.ir" in types
    assert server.db("SELECT COUNT(*) FROM audit WHERE type='pki.cmp.ir' AND result='failure'")[0][0] >= 2
    assert server.alive()


def test_cmp_kur_and_rr_then_crl_lists_serial(server, admin, tmp_path):
    dev = add_device(admin, "gw-kur")
    _, key, cert = cmp_ir(server, tmp_path, dev["enrollment"]["reference"], dev["enrollment"]["secret"])
    new_cert = tmp_path / "renewed.pem"
    p = run(cmp_args(server, "-cmd", "kur", "-cert", cert, "-key", key, "-trusted", server.ca,
                     "-certout", new_cert))
    assert new_cert.exists(), p.stderr
    run(["openssl", "verify", "-CAfile", server.ca, new_cert])
    assert serial_of(new_cert) != serial_of(cert)

    p = run(cmp_args(server, "-cmd", "rr", "-cert", new_cert, "-key", key, "-trusted", server.ca,
                     "-oldcert", new_cert, "-revreason", "1"))
    assert serial_of(new_cert) in crl_serials(server, tmp_path)
    # A revoked certificate cannot renew.
    p = run(cmp_args(server, "-cmd", "kur", "-cert", new_cert, "-key", key, "-trusted", server.ca,
                     "-certout", tmp_path / "nope.pem"), check=False)
    assert p.returncode != 0 and not (tmp_path / "nope.pem").exists()


def test_est_with_curl(server, admin, tmp_path):
    # cacerts returns the chain
    p = run(["bash", "-c", f"curl -sf --cacert {server.ca} {server.url}/.well-known/est/cacerts"
                           " | base64 -d | openssl pkcs7 -inform DER -print_certs"])
    assert p.stdout.count("BEGIN CERTIFICATE") == 2
    assert "torwart Issuing CA" in p.stdout and "torwart Root CA" in p.stdout

    dev = add_device(admin, "gw-est")
    ref, secret = dev["enrollment"]["reference"], dev["enrollment"]["secret"]
    key, csr = tmp_path / "est.key", tmp_path / "est.csr.b64"
    run(["bash", "-c", f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                       f"-keyout {key} -subj /CN={dev['id']} -outform DER | base64 > {csr}"])
    cert = tmp_path / "est.pem"
    enroll = (f"curl -sf --cacert {server.ca} -u {ref}:{secret} -H 'Content-Type: application/pkcs10'"
              f" --data-binary @{csr} {server.url}/.well-known/est/simpleenroll")
    run(["bash", "-c", f"set -o pipefail; {enroll} | base64 -d | openssl pkcs7 -inform DER -print_certs > {cert}"])
    run(["openssl", "verify", "-CAfile", server.ca, cert])
    assert f"urn:torwart:device:{dev['id']}" in run(["openssl", "x509", "-in", cert, "-noout", "-ext", "subjectAltName"]).stdout
    # The secret is single use.
    p = run(["bash", "-c", enroll.replace("-sf", "-s -o /dev/null -w %{http_code}")])
    assert p.stdout.strip() == "401"

    # simplereenroll with the client certificate renews
    cert2 = tmp_path / "est2.pem"
    reenroll = (f"curl -sf --cacert {server.ca} --cert {cert} --key {key} -H 'Content-Type: application/pkcs10'"
                f" --data-binary @{csr} {server.url}/.well-known/est/simplereenroll")
    run(["bash", "-c", f"set -o pipefail; {reenroll} | base64 -d | openssl pkcs7 -inform DER -print_certs > {cert2}"])
    run(["openssl", "verify", "-CAfile", server.ca, cert2])
    assert serial_of(cert2) != serial_of(cert)
    # without a client certificate: 401
    p = run(["bash", "-c", reenroll.replace(f"--cert {cert} --key {key} ", "").replace("-sf", "-s -o /dev/null -w %{http_code}")])
    assert p.stdout.strip() == "401"


def test_device_revoke_refuses_renewal_and_is_audited(server, admin, tmp_path):
    dev = add_device(admin, "gw-rev")
    agent_dir = tmp_path / "agent"
    from conftest import AGENT
    run([AGENT, "--state-dir", agent_dir, "enroll", "--server", server.url, "--ca", server.ca,
         "--ref", dev["enrollment"]["reference"], "--secret", dev["enrollment"]["secret"],
         "--key-store", "file"])
    run([AGENT, "--state-dir", agent_dir, "renew"])  # renewal works before
    serial = admin.run("device", "show", "gw-rev", json_out=True)["certificate"]["serial"]

    out = admin.run("device", "revoke", "gw-rev", "--reason", "keyCompromise")
    assert "revoked" in out.stdout
    p = run([AGENT, "--state-dir", agent_dir, "renew"], check=False)
    assert p.returncode != 0
    assert "renewal failed" in p.stderr and "revoked" in p.stderr, p.stderr
    assert serial in crl_serials(server, tmp_path)
    shown = admin.run("device", "show", "gw-rev", json_out=True)
    assert shown["status"] == "revoked"
    assert all(c["status"] == "revoked" for c in shown["certificates"])
    rows = server.db("SELECT actor, target, reason, result FROM audit WHERE type='device.revoke'")
    assert rows == [("admin", "gw-rev", "keyCompromise", "success")]
    events = admin.run("audit", "list", "--type", "device.revoke", json_out=True)["events"]
    assert len(events) == 1 and events[0]["target"] == "gw-rev"
    # a fresh enrollment secret for a revoked device is refused too
    p = admin.run("device", "enrollment", "gw-rev", check=False)
    assert p.returncode != 0 and "revoked" in p.stderr


def test_bad_input_gets_4xx_and_server_keeps_serving(server, admin, tmp_path):
    # Garbage on the TLS port.
    for payload in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\xff" + b"\x00" * 300,
                    bytes(range(256)) * 8]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(payload)
            try:
                s.recv(100)
            except OSError:
                pass
    # Malformed, oversized CMP.
    assert fetch(server, "/.well-known/cmp", data=b"\x30\x03\x02\x01",
                 headers={"Content-Type": "application/pkixcmp"})[0] == 400
    assert fetch(server, "/.well-known/cmp", data=b"x" * 200_000,
                 headers={"Content-Type": "application/pkixcmp"})[0] == 413
    # Replayed CMP request: record a real ir, then send the same bytes again.
    dev = add_device(admin, "gw-replay")
    key = tmp_path / "r.key"
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
    reqs = [tmp_path / "req1.der", tmp_path / "req2.der"]
    run(cmp_args(server, "-cmd", "ir", "-ref", dev["enrollment"]["reference"],
                 "-secret", f"pass:{dev['enrollment']['secret']}", "-recipient", "/CN=torwart Issuing CA",
                 "-newkey", key, "-subject", "/CN=x", "-certout", tmp_path / "r.pem",
                 "-reqout", ",".join(map(str, reqs))))
    status, body = fetch(server, "/.well-known/cmp", data=reqs[0].read_bytes(),
                         headers={"Content-Type": "application/pkixcmp"})
    assert 400 <= status < 500, status
    # EST: malformed CSR, wrong secret, missing auth.
    dev2 = add_device(admin, "gw-est-bad")
    basic = base64.b64encode(f"{dev2['enrollment']['reference']}:{dev2['enrollment']['secret']}".encode()).decode()
    assert fetch(server, "/.well-known/est/simpleenroll", data=b"!!notbase64!!",
                 headers={"Authorization": "Basic " + basic, "Content-Type": "application/pkcs10"})[0] == 400
    wrong = base64.b64encode(f"{dev2['enrollment']['reference']}:nope".encode()).decode()
    assert fetch(server, "/.well-known/est/simpleenroll", data=b"MIIB",
                 headers={"Authorization": "Basic " + wrong})[0] == 401
    assert fetch(server, "/.well-known/est/simpleenroll", data=b"MIIB")[0] == 401
    # The malformed CSR did not consume the secret: the device can still enroll.
    assert not server.db("SELECT used_us FROM enrollments WHERE reference=?", dev2['enrollment']['reference'])[0][0]
    # Oversized and malformed HTTP.
    assert fetch(server, "/api/v1/devices", data=b"x" * (2 << 20), headers={"Content-Type": "application/json"})[0] == 413
    assert fetch(server, "/api/v1/auth/login", data=b"{not json")[0] == 400

    assert server.alive()
    status, _ = fetch(server, "/pki/ca")
    assert status == 200
    types = audit_types(server)
    assert "net.bad_input" in types
    assert "pki.cmp.malformed" in types or any(t.startswith("pki.cmp") for t in types)
    assert "pki.est.simpleenroll" in types
