"""A throw-away TLS identity for loopback peers: a self-signed certificate for `localhost`.

`localhost_identity()` writes the certificate and key into a folder and returns the server's and
a client's TLS contexts: the client trusts exactly this certificate (and nothing else), so a
test can tell that verification happened against the host name it asked for.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST_NAME = "localhost"


class TlsIdentity(msgspec.Struct, frozen=True, kw_only=True):
    server: ssl.SSLContext
    client: ssl.SSLContext


def localhost_identity(folder: Path) -> TlsIdentity:
    """A server context for `localhost` (no IP address in the certificate) and its client."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST_NAME)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    certificate_path = folder / "localhost.pem"
    key_path = folder / "localhost.key"
    certificate_path.write_bytes(certificate_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate_path, key_path)
    client = ssl.create_default_context(cadata=certificate_pem.decode())
    return TlsIdentity(server=server, client=client)
