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


def make_pki(directory: Path) -> dict[str, Path]:
    """Write ``ca``, ``apiserver``, ``admin``, ``kcm`` certificates/keys and ``sa.key/pub``.

    The admin client certificate is in group ``system:masters``; the kcm one is the user
    ``system:kube-controller-manager`` that RBAC's bootstrap policy grants what it needs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=365)

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-local-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, org: str | None, server: bool) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = _key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    ]
                ),
                critical=False,
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    paths = {
        "ca.crt": directory / "ca.crt",
        "ca.key": directory / "ca.key",
        "apiserver.crt": directory / "apiserver.crt",
        "apiserver.key": directory / "apiserver.key",
        "admin.crt": directory / "admin.crt",
        "admin.key": directory / "admin.key",
        "kcm.crt": directory / "kcm.crt",
        "kcm.key": directory / "kcm.key",
        "sa.key": directory / "sa.key",
        "sa.pub": directory / "sa.pub",
    }
    _write_cert(ca, paths["ca.crt"])
    _write_key(ca_key, paths["ca.key"])
    key, cert = leaf("kube-apiserver", None, server=True)
    _write_cert(cert, paths["apiserver.crt"])
    _write_key(key, paths["apiserver.key"])
    key, cert = leaf("mlops-local-admin", "system:masters", server=False)
    _write_cert(cert, paths["admin.crt"])
    _write_key(key, paths["admin.key"])
    key, cert = leaf("system:kube-controller-manager", None, server=False)
    _write_cert(cert, paths["kcm.crt"])
    _write_key(key, paths["kcm.key"])
    sa = _key()
    _write_key(sa, paths["sa.key"])
    paths["sa.pub"].write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths
