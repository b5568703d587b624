"""X.509 profiles of SPEC §4 (CA, server, client), ECDSA P-256 keys, and certificate inspection."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address, ip_address

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fluxify.errors import PkiError

CA_COMMON_NAME = "fluxify-CA"
SERVER_COMMON_NAME = "fluxify-server"
VALIDITY = timedelta(days=3650)  # as the original, for all three kinds
BACKDATE = timedelta(hours=1)  # as the original: tolerate clocks slightly behind

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SanName = IPv4Address | IPv6Address | str


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: SigningKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return key_pem(self.key)


def new_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256: milliseconds to generate (RSA-4096 takes ~1 s); Go accepts it everywhere."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: SigningKey) -> bytes:
    """PKCS#8 ``PRIVATE KEY`` PEM, unencrypted (Go's parsers accept PKCS#8)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def san_name(host: str) -> SanName:
    """An IP SAN if ``host`` parses as an IP address, else a DNS SAN (lower-cased)."""
    try:
        return ip_address(host)
    except ValueError:
        return host.lower()


def make_ca(now: datetime, validity: timedelta = VALIDITY) -> Issued:
    key = new_key()
    name = _name(CA_COMMON_NAME)
    cert = (
        _builder(name, name, key, now, validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_server_cert(
    ca: Issued, hosts: tuple[str, ...], now: datetime, validity: timedelta = VALIDITY
) -> Issued:
    key = new_key()
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(san_name(host) for host in hosts):
        if isinstance(name, str):
            sans.append(x509.DNSName(name))
        else:
            sans.append(x509.IPAddress(name))
    builder = _leaf_builder(ca, _name(SERVER_COMMON_NAME), key, now, validity)
    cert = (
        builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_client_cert(
    ca: Issued, name: str, now: datetime, validity: timedelta = VALIDITY
) -> Issued:
    """A clientAuth certificate with CN = ``name`` (already sanitized)."""
    key = new_key()
    builder = _leaf_builder(ca, _name(name), key, now, validity)
    cert = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    ).sign(ca.key, hashes.SHA256())
    return Issued(cert, key)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def san_names(cert: x509.Certificate) -> list[SanName]:
    """The DNS and IP SANs of ``cert``, in certificate order ([] when it has none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[SanName] = []
    for general in ext.value:
        if isinstance(general, x509.DNSName):
            names.append(general.value.lower())
        elif isinstance(general, x509.IPAddress) and isinstance(
            general.value, IPv4Address | IPv6Address
        ):
            names.append(general.value)
    return names


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: object) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    return bool(cert.public_key() == public())


def load_cert(data: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{where} is not a PEM certificate ({exc})") from exc


def load_key(data: bytes, where: str) -> SigningKey:
    if b"ENCRYPTED" in data:
        raise PkiError(f"{where} holds an encrypted key; Fluxify needs it unencrypted")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{where} is not a PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{where} holds a {type(key).__name__}; expected an EC or RSA key")
    return key


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def _leaf_builder(
    ca: Issued,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.CertificateBuilder:
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return (
        _builder(subject, ca.cert.subject, key, now, validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(aki, critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
