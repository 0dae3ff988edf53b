"""Throwaway certificates for tests: a CA and the server and client certificates it signs, written as PEM files.

Usage::

    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server")                 # CN=server, SANs 127.0.0.1 and localhost, server + client auth
    alice = ca.issue("alice")                   # CN=alice: the user under --client-cert-auth with auth enabled
    proc = start_coord_server(tmp_path / "data", tls=server, client_cert_auth=True)
    with coord.connect(proc.endpoint, ca_cert=alice.ca, cert=alice.cert, key=alice.key) as client:
        client.put("k", "v")
    crl = ca.write_crl([alice])                 # a CRL revoking alice's certificate, for --client-crl-file

Keys are ECDSA P-256 (fast to generate); certificates are valid from an hour ago (clock skew) for ``days`` days.
Needs the ``cryptography`` package, imported only when a CA is created.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

__all__ = ["CertificateAuthority", "TLSFiles"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files one side of a TLS connection uses: its certificate and key, and the CA certificate it trusts."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self, *, client_cert_auth: bool = False, peer: bool = False) -> list[str]:
        """etcd's (and coord-server's) flags serving with these files: ``--cert-file``, ``--key-file``,
        ``--trusted-ca-file`` (``--peer-*`` with ``peer``), plus ``--[peer-]client-cert-auth`` if asked."""
        prefix = "--peer-" if peer else "--"
        args = [f"{prefix}cert-file", str(self.cert), f"{prefix}key-file", str(self.key)]
        args += [f"{prefix}trusted-ca-file", str(self.ca)]
        if client_cert_auth:
            args.append(f"{prefix}client-cert-auth")
        return args

    def etcdctl_args(self) -> list[str]:
        """etcdctl's flags presenting these files: ``--cacert``, ``--cert``, ``--key``."""
        return ["--cacert", str(self.ca), "--cert", str(self.cert), "--key", str(self.key)]


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca.key``) that issues certificates into the same directory.

    Every certificate it issues is usable for both server and client authentication, so one file pair can serve a
    member's listener and its connections to other members. Raises ImportError without ``cryptography``.
    """

    def __init__(self, directory: Path, common_name: str = "coord-test-ca", *, days: int = 2) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.days = days
        directory.mkdir(parents=True, exist_ok=True)
        self._key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        not_before, not_after = _validity(days)
        self._name = name
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.key = directory / "ca.key"
        _write(self.cert, _cert_pem(self._cert))
        _write(self.key, _key_pem(self._key), private=True)

    def issue(
        self,
        name: str,
        common_name: str | None = None,
        *,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        days: int | None = None,
    ) -> TLSFiles:
        """Sign a new key for ``common_name`` (default ``name``) with ``hosts`` (IP addresses or DNS names) as subject
        alternative names; writes ``<name>.pem`` and ``<name>.key``. Returns the files with this CA as ``ca``."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _new_key()
        not_before, not_after = _validity(days if days is not None else self.days)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name if common_name is not None else name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = TLSFiles(self.cert, self.directory / f"{name}.pem", self.directory / f"{name}.key")
        _write(files.cert, _cert_pem(cert))
        _write(files.key, _key_pem(key), private=True)
        return files

    def rotate(
        self, files: TLSFiles, common_name: str, *, hosts: Sequence[str] = DEFAULT_HOSTS, days: int | None = None
    ) -> None:
        """Replace ``files``' certificate and key with a newly signed pair for ``common_name``, as an operator
        rotating a server's certificate does: each file is swapped in whole (rename), the key first, so a reader may
        briefly see the new key with the old certificate, never a partly written file."""
        staged = self.issue(f".{files.cert.stem}.rotating", common_name, hosts=hosts, days=days)
        os.replace(staged.key, files.key)
        os.replace(staged.cert, files.cert)

    def write_crl(
        self, revoked: Sequence[TLSFiles] = (), path: Path | None = None, *, der: bool = False, days: int | None = None
    ) -> Path:
        """Write a certificate revocation list signed by this CA that revokes the certificates of ``revoked`` (by
        serial number; an empty list revokes nothing) to ``path`` (default ``<directory>/crl.pem``, or ``crl.der``
        with ``der``), in PEM or DER. The file is swapped in whole (rename), so a server re-reading it never sees a
        partly written list. The list is current from an hour ago for ``days`` days (default: the CA's). Returns the
        path; raises ValueError if a certificate file does not parse."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        now = datetime.datetime.now(datetime.UTC)
        this_update, next_update = _validity(days if days is not None else self.days)
        builder = x509.CertificateRevocationListBuilder().issuer_name(self._name)
        builder = builder.last_update(this_update).next_update(next_update)
        for files in revoked:
            serial = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        target = path if path is not None else self.directory / ("crl.der" if der else "crl.pem")
        staged = target.with_name(f".{target.name}.writing")
        staged.write_bytes(crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
        os.replace(staged, target)
        return target


def _new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)


def _key_usage(*, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(hosts: Sequence[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
