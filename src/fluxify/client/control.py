"""The control client (SPEC §3): connect, mutual TLS, send the request, half-close, read to EOF.

Async, so the bonding runner awaits it without blocking its loop. Every failure becomes a
:class:`~fluxify.errors.ControlError` whose sentence says what happened and what to do.
"""

import asyncio
import ssl

from cryptography import x509

from fluxify.client.config import ServerAddress
from fluxify.errors import (
    ControlError,
    ControlTimeoutError,
    RemoteProtocolError,
    SessionRefusedError,
)
from fluxify.pki.certs import san_names
from fluxify.pki.client_material import ClientMaterial
from fluxify.pki.tls import client_context
from fluxify.pki.tls_stream import TlsStream, TlsTooLongError
from fluxify.protocol.control import (
    MAX_CONTROL_MESSAGE_BYTES,
    SessionRequest,
    SessionResponse,
    decode_response,
    encode_request,
)

CONTROL_TIMEOUT_S = 10.0  # the original's controlTimeout, for the whole exchange

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that the user can act on.
_HOST_MISMATCH = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_NOT_OUR_CA = {2, 7, 18, 19, 20, 21}  # unknown issuer, bad signature, self-signed
_EXPIRED, _NOT_YET_VALID, _WRONG_PURPOSE = 10, 9, 26
_REJECTED_BY_SERVER = {
    "TLSV1_ALERT_UNKNOWN_CA": "not signed by its CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it has expired",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "it is not a client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate (not signed by its CA, expired, "
    "or not a client certificate)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires one and got none",
}


async def fetch_session(
    server: ServerAddress,
    material: ClientMaterial,
    request: SessionRequest,
    timeout: float = CONTROL_TIMEOUT_S,
) -> SessionResponse:
    """Ask ``server`` for a session; ``timeout`` covers connect, handshake and answer.

    Send ``material.common_name`` as ``request.client_name`` (or ""): a Fluxify server refuses a
    name that differs from the certificate's CN.
    """
    context = client_context(material)
    try:
        async with asyncio.timeout(timeout):
            body = await _exchange(server, context, request, material)
    except TimeoutError:
        raise ControlTimeoutError(
            f"connection to the control server {server} timed out after {timeout:g} s; check "
            "that fluxify-server runs there and that the TCP port is reachable"
        ) from None
    if not body.strip():
        raise SessionRefusedError(
            f"the server {server} closed the connection without a session: it refused this "
            f"client (certificate {material.common_name!r}); its log says why"
        )
    return decode_response(body)


async def _exchange(
    server: ServerAddress,
    context: ssl.SSLContext,
    request: SessionRequest,
    material: ClientMaterial,
) -> bytes:
    tls = await connect_tls(server, context)
    try:
        try:
            await tls.handshake()
        except ssl.SSLCertVerificationError as exc:
            raise await _server_cert_error(server, material, exc) from None
        await tls.send_all(encode_request(request))
        # Go's server answers only after EOF (reference §2.2): close_notify, as Go's CloseWrite.
        await tls.close_write()
        return await tls.read_to_eof(MAX_CONTROL_MESSAGE_BYTES)
    except ssl.SSLError as exc:
        raise _tls_error(server, exc) from None
    except TlsTooLongError:
        raise RemoteProtocolError(
            f"the server {server} sent more than {MAX_CONTROL_MESSAGE_BYTES} bytes; "
            "it is not a Fluxify control server"
        ) from None
    except ConnectionError as exc:
        raise ControlError(
            f"the control server {server} dropped the connection ({exc.strerror or exc}); "
            "it may have refused this client — its log says why"
        ) from None
    finally:
        tls.abort()  # our close_notify is already sent; nothing more to say


async def connect_tls(server: ServerAddress, context: ssl.SSLContext) -> TlsStream:
    """A TCP connection to the control port, as a TLS stream not yet shaken hands."""
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
    except OSError as exc:
        raise ControlError(
            f"cannot connect to the control server {server}: {exc.strerror or exc}; check "
            "-server and -ctrl, and that fluxify-server runs there"
        ) from None
    return TlsStream(reader, writer, context, server_side=False, server_hostname=server.host)


def _tls_error(server: ServerAddress, exc: ssl.SSLError) -> ControlError:
    reason = exc.reason or str(exc)
    if reason in _REJECTED_BY_SERVER:
        return ControlError(
            f"client certificate rejected by the server {server}: {_REJECTED_BY_SERVER[reason]}; "
            "get a new bundle from the server (fluxify-server -new-client NAME -reissue)"
        )
    return ControlError(f"TLS with the control server {server} failed: {reason}")


async def _server_cert_error(
    server: ServerAddress, material: ClientMaterial, exc: ssl.SSLCertVerificationError
) -> ControlError:
    code = exc.verify_code
    if code in _HOST_MISMATCH:
        names = await _server_names(server, material)
        covers = ", ".join(names) if names is not None else "names that could not be read"
        return ControlError(
            f"server certificate does not cover {server.host} (it covers: {covers}) — "
            "regenerate it with -hosts on the server, or connect to one of those names"
        )
    if code in _NOT_OUR_CA:
        return ControlError(
            f"the server certificate of {server} is not signed by the CA in "
            f"{', '.join(map(str, material.files))}; the server's PKI was regenerated or this "
            "is another server — copy its current bundle"
        )
    if code == _EXPIRED:
        return ControlError(
            f"the server certificate of {server} has expired; renew it on the server (-regen)"
        )
    if code == _NOT_YET_VALID:
        return ControlError(
            f"the server certificate of {server} is not valid yet; check this machine's clock"
        )
    if code == _WRONG_PURPOSE:
        return ControlError(f"{server} presented a certificate that is not a server certificate")
    return ControlError(
        f"the server certificate of {server} failed verification: {exc.verify_message}"
    )


async def _server_names(server: ServerAddress, material: ClientMaterial) -> list[str] | None:
    """The SANs of the (CA-verified) server certificate, read without the hostname check."""
    try:
        tls = await connect_tls(server, client_context(material, check_hostname=False))
    except ControlError:
        return None
    try:
        await tls.handshake()
        der = tls.peer_certificate_der()
    except (OSError, ssl.SSLError):
        return None
    finally:
        tls.abort()
    return [str(name) for name in san_names(x509.load_der_x509_certificate(der))] if der else None
