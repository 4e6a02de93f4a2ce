"""Throwaway TLS material for tests, made with the `openssl` command: a CA, a broker certificate, a client one."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # PEM certificate of the CA that signed the other two
    server_cert: Path  # for 127.0.0.1 and localhost
    server_key: Path  # PKCS#8, unencrypted
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # the same key under CLIENT_KEY_PASSWORD
    other_ca: Path  # a CA that signed nothing here: verifying the broker against it must fail
    other_host_cert: Path  # signed by the CA, for db.elsewhere.example only: a hostname check must refuse it
    other_host_key: Path


CLIENT_KEY_PASSWORD = "key-password-for-tests"


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def make_certificates(directory: Path) -> Certificates:
    """Everything valid for one day, EC P-256 keys (fast to make)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, stdin=subprocess.DEVNULL)

    def key(name: str) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)

    def ca(name: str) -> None:
        key(f"{name}.key")
        run("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}")

    def signed(name: str, subject: str, extensions: str) -> None:
        key(f"{name}.key")
        (directory / f"{name}.ext").write_text(extensions)
        run("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        )  # fmt: skip

    ca("ca")
    ca("other-ca")
    signed("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    signed("client", "/CN=booking-sessions", "extendedKeyUsage=clientAuth\n")
    signed("other-host", "/CN=db.elsewhere.example", "subjectAltName=DNS:db.elsewhere.example\n")
    run(
        "pkcs8", "-topk8", "-in", "client.key", "-out", "client-encrypted.key",
        "-v2", "aes-256-cbc", "-passout", f"pass:{CLIENT_KEY_PASSWORD}",
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
        other_ca=directory / "other-ca.pem",
        other_host_cert=directory / "other-host.pem",
        other_host_key=directory / "other-host.key",
    )
