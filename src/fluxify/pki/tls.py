"""``ssl.SSLContext`` builders for the control plane: mutual TLS, 1.2 minimum, 1.3 preferred."""

import ssl
import tempfile
from pathlib import Path

from fluxify.errors import PkiError
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.files import PRIVATE_FILE_MODE, ServerPkiLayout, write_file


def server_context(layout: ServerPkiLayout) -> ssl.SSLContext:
    """Server side: ``server.pem`` + key; client certificates required, verified against ``ca.pem``.

    OpenSSL checks the clientAuth purpose of the client's chain, as Go does. TLS 1.3 is preferred
    simply because it is the highest version both sides offer.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common_settings(context)
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=str(layout.ca_cert))
        context.load_cert_chain(str(layout.server_cert), str(layout.server_key))
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(
            f"cannot load the server's TLS files from {layout.root} ({exc}); "
            "run the server once to create them, or regenerate them with -regen"
        ) from exc
    return context


def client_context(material: ClientMaterial, *, check_hostname: bool = True) -> ssl.SSLContext:
    """Client side: trust only the Fluxify CA, present the client certificate.

    ``check_hostname=False`` (chain still verified) exists only to read a mismatching server's
    names for an error message. ``load_cert_chain`` reads only files, so the leaf and key go
    through a 0600 file in a private temporary directory that is removed at once.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common_settings(context)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=material.ca_pem.decode("ascii"))
        with tempfile.TemporaryDirectory(prefix="fluxify-tls-") as private:
            chain = Path(private) / "client.pem"
            write_file(chain, material.cert_pem + material.key_pem, PRIVATE_FILE_MODE)
            context.load_cert_chain(str(chain))
    except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
        raise PkiError(
            f"cannot use the client certificate from {', '.join(map(str, material.files))} "
            f"({exc}); copy a fresh bundle from the server"
        ) from exc
    return context


# TLS 1.2 suites: forward-secret AEAD only (no CBC, no RSA key exchange); what Go offers too.
# TLS 1.3 suites are all AEAD and configured apart by OpenSSL.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"


def _common_settings(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # A TCP FIN without close_notify is a clean EOF, as in Go; without this OpenSSL 3 puts the
    # connection in an error state and the server could not answer a client that half-closed
    # with shutdown(SHUT_WR) (reference §2.2 (a)). The JSON parser still catches truncation.
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
