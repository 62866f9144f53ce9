"""A throw-away PKI for the local control plane: a CA, serving certs and a service-account key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


_SERVER_NAMES = [
    x509.DNSName("localhost"),
    x509.DNSName("kubernetes"),
    x509.DNSName("kubernetes.default"),
    x509.DNSName("kubernetes.default.svc"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
]


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (builder.serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365)))


def _ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-local-ca")])
    builder = _validity(
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    )
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: rsa.RSAPrivateKey, ca: x509.Certificate, cn: str, org: str | None, server: bool
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _validity(
        x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.subject)
        .public_key(key.public_key())
    ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(_SERVER_NAMES), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """Write ``ca``, ``apiserver``, ``admin``, ``kcm`` certificates/keys and ``sa.key/pub``.

    The admin client certificate is in group ``system:masters``; the kcm one is the user
    ``system:kube-controller-manager`` that RBAC's bootstrap policy grants what it needs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca()
    pairs = {
        "ca": (ca_key, ca),
        "apiserver": _leaf(ca_key, ca, "kube-apiserver", None, server=True),
        "admin": _leaf(ca_key, ca, "mlops-local-admin", "system:masters", server=False),
        "kcm": _leaf(ca_key, ca, "system:kube-controller-manager", None, server=False),
    }
    paths: dict[str, Path] = {}
    for name, (key, cert) in pairs.items():
        paths[f"{name}.crt"] = directory / f"{name}.crt"
        paths[f"{name}.key"] = directory / f"{name}.key"
        _write_cert(cert, paths[f"{name}.crt"])
        _write_key(key, paths[f"{name}.key"])
    sa = _key()
    paths["sa.key"] = directory / "sa.key"
    paths["sa.pub"] = directory / "sa.pub"
    _write_key(sa, paths["sa.key"])
    paths["sa.pub"].write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths
