"""Find and load a client's certificate, key and CA from every layout SPEC §4 promises.

Layouts under the client PKI dir: ``<name>.pem`` holding cert + key (with or without the CA
inside, CA first as Go's bundles have it) or ``<name>.pem`` + ``<name>-key.pem``; the CA comes
from ``ca.pem`` and/or from inside the bundle. The leaf is the certificate matching the key, so
the order of the certificates does not matter.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fluxify.errors import PkiError
from fluxify.pki.certs import (
    SigningKey,
    common_name,
    key_matches,
    key_pem,
    load_cert,
    load_key,
)
from fluxify.pki.files import (
    CA_CERT_FILE,
    KEY_SUFFIX,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    pem_blocks,
    read_file,
)

_CERT_LABEL = "CERTIFICATE"
_KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
_NOT_CLIENT_FILES = frozenset({CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, "ca-key.pem"})


@dataclass(frozen=True)
class ClientMaterial:
    """A client's TLS identity in memory: PEM texts, its CN and the files they came from.

    ``name`` is the file stem; ``common_name`` is what the server knows the client as (send it as
    ``client_name``: a server of ours refuses a name that differs from the CN).
    """

    name: str
    common_name: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    not_after: datetime
    files: tuple[Path, ...]


def load_client_material(
    pki_dir: Path, name: str = "", *, now: datetime | None = None
) -> ClientMaterial:
    """Load ``<pki_dir>/<name>.pem`` (or the only client certificate there when ``name`` is "")."""
    name = name.strip().removesuffix(".pem") or detect_client_name(pki_dir)
    cert_path = pki_dir / f"{name}.pem"
    key_path = pki_dir / f"{name}{KEY_SUFFIX}.pem"
    ca_path = pki_dir / CA_CERT_FILE
    if not cert_path.is_file():
        raise PkiError(
            f"no client certificate {cert_path}; copy the bundle the server made "
            f"(pki/clients/bundles/{name}.pem) there, or choose another name with -client"
        )
    files = [cert_path]
    blocks = pem_blocks(read_file(cert_path, "client certificate"))
    key = _load_private_key(blocks, cert_path, key_path, files)
    certs = [load_cert(block, str(cert_path)) for label, block in blocks if label == _CERT_LABEL]
    leaf = next((cert for cert in certs if key_matches(cert, key)), None)
    if leaf is None:
        raise PkiError(
            f"none of the certificates in {cert_path} belongs to the key in {files[-1]}; "
            "the files come from different issuances — copy a fresh bundle from the server"
        )
    cas = _trusted_cas([cert for cert in certs if cert is not leaf], ca_path, cert_path, files)
    _check_validity(leaf, cert_path, now or datetime.now(UTC))
    return ClientMaterial(
        name=name,
        common_name=common_name(leaf),
        ca_pem=b"".join(_pem(cert) for cert in cas),
        cert_pem=_pem(leaf),
        key_pem=key_pem(key),
        not_after=leaf.not_valid_after_utc,
        files=tuple(files),
    )


def _trusted_cas(
    in_bundle: list[x509.Certificate], ca_path: Path, cert_path: Path, files: list[Path]
) -> list[x509.Certificate]:
    """The CA certificates inside the bundle plus those of ``ca.pem`` (appended to files)."""
    cas = list(in_bundle)
    if ca_path.is_file():
        files.append(ca_path)
        cas += [
            load_cert(block, str(ca_path))
            for label, block in pem_blocks(read_file(ca_path, "CA certificate"))
            if label == _CERT_LABEL
        ]
    if not cas:
        raise PkiError(
            f"no CA certificate: {ca_path} does not exist and {cert_path} holds only the "
            "client certificate; copy the server's ca.pem there"
        )
    return cas


def _load_private_key(
    blocks: list[tuple[str, bytes]], cert_path: Path, key_path: Path, files: list[Path]
) -> SigningKey:
    """The first key in the bundle, else the one in ``<name>-key.pem`` (appended to files)."""
    key_blocks = [block for label, block in blocks if label in _KEY_LABELS]
    if key_blocks:
        return load_key(key_blocks[0], str(cert_path))
    if not key_path.is_file():
        raise PkiError(
            f"{cert_path} holds no private key and {key_path} does not exist; "
            "use the bundle from the server or put the key next to the certificate"
        )
    files.append(key_path)
    key_blocks = [
        block
        for label, block in pem_blocks(read_file(key_path, "client key"))
        if label in _KEY_LABELS
    ]
    if not key_blocks:
        raise PkiError(f"{key_path} holds no PEM private key")
    return load_key(key_blocks[0], str(key_path))


def detect_client_name(pki_dir: Path) -> str:
    """The stem of the only client certificate in ``pki_dir``, or a PkiError listing what it saw."""
    try:
        candidates = sorted(
            path
            for path in pki_dir.glob("*.pem")
            if path.name not in _NOT_CLIENT_FILES and not path.stem.endswith(KEY_SUFFIX)
        )
    except OSError as exc:
        raise PkiError(f"cannot list the client PKI directory {pki_dir}: {exc}") from exc
    found = [path for path in candidates if _is_client_file(path)]
    if len(found) == 1:
        return found[0].stem
    if not found:
        looked = ", ".join(path.name for path in candidates) or "no candidate .pem files"
        raise PkiError(
            f"no client certificate found in {pki_dir} (looked at: {looked}); copy the bundle "
            "from the server's pki/clients/bundles/ there, or give -pki"
        )
    raise PkiError(
        f"several client certificates in {pki_dir}: {', '.join(p.stem for p in found)}; "
        "choose one with -client NAME"
    )


def _is_client_file(path: Path) -> bool:
    try:
        labels = {label for label, _ in pem_blocks(path.read_bytes())}
    except OSError:
        return False
    if _CERT_LABEL not in labels:
        return False
    return bool(labels & _KEY_LABELS) or path.with_name(f"{path.stem}{KEY_SUFFIX}.pem").is_file()


def _check_validity(leaf: x509.Certificate, path: Path, now: datetime) -> None:
    if now > leaf.not_valid_after_utc:
        raise PkiError(
            f"the client certificate in {path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}; "
            "ask the server operator for a new one (fluxify-server -new-client NAME -reissue)"
        )
    if now < leaf.not_valid_before_utc:
        raise PkiError(
            f"the client certificate in {path} is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock"
        )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
