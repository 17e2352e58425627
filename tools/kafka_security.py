"""The ``sasl_ssl`` side of tools/local_kafka.py: a throwaway CA and broker
certificate made with openssl, the SCRAM user, and the broker's listener settings.

The secrets live in the broker's data dir: ``tls/`` (CA, key, keystore) and
``sasl.password`` (mode 0600). Standard library only, like local_kafka.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SCRAM_USER = "txingest"


@dataclass(frozen=True)
class Secured:
    """How a client reaches a ``sasl_ssl`` broker: trust ``cafile`` (PEM), log in with
    SCRAM as ``username``; the password is in ``password_file`` (mode 0600)."""

    cafile: Path
    username: str
    password_file: Path
    mechanisms: tuple[str, ...] = SCRAM_MECHANISMS

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


def sasl_ssl_properties(port: int, controller_port: int, internal_port: int,
                        keystore: Path, keystore_password: str) -> dict[str, str]:
    """Clients on SASL_SSL (SCRAM); inter-broker and controller stay PLAINTEXT on
    their own loopback ports. No authorizer: any authenticated user may do anything."""
    props = {
        "listeners": f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},"
                                f"INTERNAL://127.0.0.1:{internal_port}",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map":
            "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.client.auth": "none",
    }
    for mechanism in SCRAM_MECHANISMS:
        props[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;")
    return props


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"openssl {args[0]} failed: {done.stderr.strip()}")


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A throwaway self-signed CA: returns ``name.pem`` (to trust); ``name.key`` beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "7", "-subj", f"/CN=txingest throwaway {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", directory / f"{name}.key", "-out", pem)
    return pem


SERVER_CERT_EXTENSIONS = """\
subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def broker_keystore(ca: Path, password: str) -> Path:
    """A PKCS12 keystore beside ``ca``: a localhost / 127.0.0.1 certificate it signed."""
    tls = ca.parent
    key, csr, cert, ext = (tls / f"broker.{n}" for n in ("key", "csr", "pem", "ext"))
    ext.write_text(SERVER_CERT_EXTENSIONS)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=localhost", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca.with_suffix(".key"),
             "-set_serial", str(secrets.randbits(63)), "-days", "7", "-extfile", ext,
             "-out", cert)
    keystore = tls / "broker.p12"
    _openssl("pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", ca, "-name", "broker",
             "-passout", f"pass:{password}", "-out", keystore)
    return keystore


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def secure_data_dir(data: Path, port: int, controller_port: int, internal_port: int,
                    ) -> tuple[dict[str, str], list[str]]:
    """CA, keystore and SCRAM password in ``data``: the broker's properties and the
    StorageTool arguments that create the SCRAM user."""
    keystore_password = secrets.token_hex(16)
    keystore = broker_keystore(make_ca(data / "tls"), keystore_password)
    password = secrets.token_hex(16)
    _write_private(data / "sasl.password", password)
    (data / "sasl.username").write_text(SCRAM_USER)
    scram = [arg for mechanism in SCRAM_MECHANISMS for arg in
             ("--add-scram", f"{mechanism}=[name={SCRAM_USER},password={password}]")]
    props = sasl_ssl_properties(port, controller_port, internal_port, keystore, keystore_password)
    return props, scram


def secured_in(data: Path) -> Secured | None:
    cafile = data / "tls" / "ca.pem"
    if not cafile.exists():
        return None
    return Secured(cafile, (data / "sasl.username").read_text(), data / "sasl.password")
