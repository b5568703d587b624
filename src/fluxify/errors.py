"""The Fluxify error tree, drawn once.

Every error Fluxify raises on purpose derives from :class:`FluxifyError` and carries a sentence
that says what was wrong and what to do. The UDP data plane never raises for bad input: it drops
and counts (see ``fluxify.protocol.drops``).

::

    FluxifyError
    ├── ConfigError              a flag, setting or file the user gave is wrong
    ├── PkiError                 certificates or keys missing, unreadable or not matching
    ├── ControlError             the TLS control plane failed
    │   ├── RemoteProtocolError  the peer sent something the protocol does not allow
    │   ├── LocalProtocolError   we were asked to send something the protocol does not allow
    │   ├── ControlTimeoutError  the peer did not answer in time
    │   └── SessionRefusedError  the server would not give us a session (or we refused one)
    │       └── PoolExhaustedError  every inner address is in use
    └── HostError                changing TUN, routes, rules, nftables or sysctls failed
"""


class FluxifyError(Exception):
    """Base of every error Fluxify raises on purpose; ``str()`` is a sentence for the user."""


class ConfigError(FluxifyError):
    """A flag, a setting or a configuration file is invalid."""


class PkiError(FluxifyError):
    """Certificates or keys are missing, unreadable, expired or do not belong together."""


class ControlError(FluxifyError):
    """The TLS control plane failed."""


class RemoteProtocolError(ControlError):
    """The peer violated the control protocol (its fault)."""


class LocalProtocolError(ControlError):
    """We were asked to encode something the control protocol does not allow (our fault)."""


class ControlTimeoutError(ControlError):
    """The peer did not complete the exchange within the deadline."""


class SessionRefusedError(ControlError):
    """The server closed the connection without giving us a session (server side: we refuse)."""


class PoolExhaustedError(SessionRefusedError):
    """Every address of the inner pool (10.8.0.2-.250) belongs to a live session."""


class HostError(FluxifyError):
    """Changing this host's network state failed."""
