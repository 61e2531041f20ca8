"""Self-signed TLS certificates for the links between a daemon and its nodes.

Each side makes its own key and certificate once (under OMG_HOME/tls, private to the user) and
the other trusts exactly that certificate: a node pins the daemon's by the sha256 fingerprint
the daemon prints (`omg node join --fingerprint`), the daemon pins a node's by the certificate
the node sent over the already authenticated join stream. No CA is needed, and an IP address
works as well as a host name because the peer checks the certificate's own DNS name (see
`tls_name`), not the address it dialled.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from pathlib import Path

from ohmygpu.core.errors import InvalidArgument, Unavailable


def ensure_self_signed(directory: Path, stem: str, dns_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of `directory`/`stem`.crt|.key, made on first use: an EC P-256
    key and a ten-year certificate for `dns_name`. The key file is written mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path.read_bytes(), key_path.read_bytes()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    tmp = key_path.with_suffix(".key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.replace(tmp, key_path)
    cert_path.write_bytes(cert_pem)
    return cert_pem, key_pem


def fingerprint(cert_pem: bytes) -> str:
    """"sha256:<hex>" of the certificate's DER bytes (what `openssl x509 -fingerprint -sha256` hashes)."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    return "sha256:" + hashlib.sha256(der).hexdigest()


def tls_name(cert_pem: bytes) -> str:
    """The name a client checks the certificate against: its first DNS subject alternative name,
    else its common name. Raises InvalidArgument for bytes that are not a PEM certificate."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise InvalidArgument(f"not a PEM certificate: {e}") from None
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


def fetch_pinned(host: str, port: int, expected: str, *, timeout: float = 10.0) -> bytes:
    """The certificate a TLS server at host:port presents, as PEM, when its fingerprint is
    `expected` ("sha256:<hex>"); raises Unavailable when it cannot be reached and
    InvalidArgument when it presents another certificate (someone in between, or the wrong
    daemon)."""
    want = expected.strip().lower()
    if not want.startswith("sha256:"):
        want = "sha256:" + want.replace(":", "")
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout).encode()
    except (OSError, ssl.SSLError) as e:
        raise Unavailable(f"cannot reach {host}:{port} to read its TLS certificate: {e}") from None
    got = fingerprint(pem)
    if got != want:
        raise InvalidArgument(f"{host}:{port} presents a TLS certificate with fingerprint {got}, not the "
                              f"{want} given; refusing to join it")
    return pem
