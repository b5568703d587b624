"""Where the client keeps its files (SPEC §4): ``~/.fluxify`` of the user who invoked it, and the
saved settings ``~/.fluxify/config.json`` the TUI reuses, merged under explicit CLI flags.

The file keeps the Go client's schema (reference §4.2), all keys always written, plus
``backup`` (those of ``ifaces`` that are backup uplinks, ``-backup``), which Go's decoder
ignores::

    {"server": "host:port", "mode": "bonding" | "load-balance", "ifaces": ["eth0", "wwan0"],
     "client": "alice", "pki": "/home/u/.fluxify", "ctrl": 8443, "backup": ["wwan0"]}

Unlike the original, a stored value never overrides a flag given on the command line.
"""

import contextlib
import dataclasses
import errno
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxify.client.config import DEFAULT_CONTROL_PORT, ClientConfig, Mode, ServerAddress
from fluxify.errors import ConfigError

SETTINGS_DIR_NAME = ".fluxify"
SETTINGS_FILE_NAME = "config.json"
SETTINGS_DIR_MODE = 0o700
SETTINGS_FILE_MODE = 0o600
STORED_MODES = (Mode.BONDING.value, Mode.LOAD_BALANCE.value)


@dataclass(frozen=True)
class InvokingUser:
    """The human behind this process: under sudo or pkexec, not root."""

    home: Path
    uid: int | None  # None: this process's own user
    gid: int | None


def invoking_user() -> InvokingUser:
    """``$SUDO_USER`` (sudo) or ``$PKEXEC_UID`` (pkexec) when set and known, else this user."""
    entry: pwd.struct_passwd | None = None
    sudo_user = os.environ.get("SUDO_USER")
    pkexec_uid = os.environ.get("PKEXEC_UID", "")
    try:
        if sudo_user:
            entry = pwd.getpwnam(sudo_user)
        elif pkexec_uid.isdigit():
            entry = pwd.getpwuid(int(pkexec_uid))
    except KeyError:
        entry = None
    if entry is None:
        return InvokingUser(Path.home(), None, None)
    return InvokingUser(Path(entry.pw_dir), entry.pw_uid, entry.pw_gid)


def invoking_user_home() -> Path:
    """The invoking user's home (so root finds the user's certificates), else ``$HOME``."""
    return invoking_user().home


def default_pki_dir() -> Path:
    return invoking_user_home() / SETTINGS_DIR_NAME


def settings_path() -> Path:
    return invoking_user_home() / SETTINGS_DIR_NAME / SETTINGS_FILE_NAME


@dataclass(frozen=True)
class StoredSettings:
    """The saved settings. Empty strings, ``()`` and ``ctrl`` 0 mean "not stored"."""

    server: str = ""
    mode: str = Mode.BONDING.value
    ifaces: tuple[str, ...] = ()
    client: str = ""
    pki: str = ""
    ctrl: int = DEFAULT_CONTROL_PORT
    backup: tuple[str, ...] = ()  # of ``ifaces``: the backup uplinks

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        body["ifaces"] = list(self.ifaces)
        body["backup"] = list(self.backup)
        return json.dumps(body, indent=2) + "\n"


def load_settings(path: Path | None = None) -> StoredSettings:
    """The saved settings, defaults when the file does not exist, or a ConfigError."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return StoredSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the saved settings {path} ({exc}); fix or delete it"
        ) from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the saved settings {path} are not valid JSON (line {exc.lineno}: {exc.msg}); "
            "fix the file or delete it to start from defaults"
        ) from None
    if not isinstance(body, dict):
        raise ConfigError(
            f"the saved settings {path} must be a JSON object; fix the file or delete it"
        )
    return _settings_from(body, path)


def _settings_from(body: dict[str, Any], path: Path) -> StoredSettings:
    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(
            f'the saved settings {path}: "{key}" must be {expected}, not {body[key]!r}; '
            "fix the value or delete the file"
        )

    values: dict[str, Any] = {}
    for key in ("server", "client", "pki"):
        if body.get(key) is not None:
            if not isinstance(body[key], str):
                raise bad(key, "a string")
            values[key] = body[key].strip()
    if body.get("mode"):  # "" or null: the default
        if body["mode"] not in STORED_MODES:
            raise bad("mode", '"bonding" or "load-balance"')
        values["mode"] = body["mode"]
    for key in ("ifaces", "backup"):
        if body.get(key) is not None:  # Go writes null for an empty list
            names = body[key]
            if not isinstance(names, list) or not all(isinstance(i, str) and i for i in names):
                raise bad(key, "a list of interface names")
            values[key] = tuple(dict.fromkeys(names))
    # A backup that is not among the interfaces means nothing (the file was edited by hand, or
    # the interface was dropped): ignored rather than refused, so the TUI can still save.
    stored_ifaces = values.get("ifaces", ())
    values["backup"] = tuple(n for n in values.get("backup", ()) if n in stored_ifaces)
    if body.get("ctrl") is not None:
        ctrl = body["ctrl"]
        if isinstance(ctrl, bool) or not isinstance(ctrl, int) or not 0 <= ctrl <= 65535:
            raise bad("ctrl", "a port number in 1..65535")
        values["ctrl"] = ctrl or DEFAULT_CONTROL_PORT
    return StoredSettings(**values)


def save_settings(settings: StoredSettings, path: Path | None = None) -> Path:
    """Write atomically: directory 0700, file 0600; owned by the invoking user when run as root.

    As root, the settings directory lives in someone else's home: it is opened without
    following a symbolic link and everything after that (mode, owner, the new file, the rename)
    goes through that directory's descriptor, so a link planted as ``~/.fluxify`` cannot make
    root chmod or chown anything else.
    """
    path = path or settings_path()
    owner = invoking_user() if os.geteuid() == 0 else None
    try:
        path.parent.mkdir(mode=SETTINGS_DIR_MODE, parents=True, exist_ok=True)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        if owner is not None:
            flags |= os.O_NOFOLLOW
        try:
            directory = os.open(path.parent, flags)
        except OSError as exc:
            if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
                raise ConfigError(
                    f"cannot save the settings: {path.parent} is a symbolic link or not a "
                    "directory; as root Fluxify only writes into a real directory. Remove it "
                    "and save again"
                ) from exc
            raise
        try:
            _write_in(directory, path.name, settings.to_json(), owner)
        finally:
            os.close(directory)
    except OSError as exc:
        raise ConfigError(
            f"cannot save the settings to {path} ({exc.strerror}); check that directory"
        ) from exc
    return path


def _write_in(directory: int, name: str, text: str, owner: InvokingUser | None) -> None:
    """Replace ``name`` in the open ``directory`` with ``text``, by descriptors only."""
    info = os.fstat(directory)
    chown_to = None
    if owner is not None and owner.uid is not None and owner.gid is not None:
        if info.st_uid not in {0, owner.uid}:
            raise ConfigError(
                f"cannot save the settings: the settings directory belongs to uid "
                f"{info.st_uid}, neither root nor the invoking user; remove it and save again"
            )
        chown_to = (owner.uid, owner.gid)
    os.fchmod(directory, SETTINGS_DIR_MODE)
    temp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        SETTINGS_FILE_MODE,
        dir_fd=directory,
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), SETTINGS_FILE_MODE)
            if chown_to is not None:
                # Root saving into the user's home must not lock the user out of their file.
                os.fchown(handle.fileno(), *chown_to)
            handle.write(text)
        os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=directory)
        raise
    if chown_to is not None:
        os.fchown(directory, *chown_to)


def parse_server(text: str, default_port: int) -> ServerAddress:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 literal; else ConfigError."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"server {text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"server {text!r}: expected host[:port]")
    if not port_text:
        return ServerAddress(host, default_port)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"server {text!r}: the port must be a number in 1..65535")
    return ServerAddress(host, int(port_text))


def expand_pki(text: str) -> Path:
    """A stored PKI path: ``~`` is the invoking user's home (the Go client used ``$HOME``)."""
    if text == "~" or text.startswith("~/"):
        return invoking_user_home() / text[2:]
    return Path(text)


def merged_config(config: ClientConfig, stored: StoredSettings | None = None) -> ClientConfig:
    """``config`` with stored values for every setting not given on the command line.

    Flags named in ``config.explicit`` always win (SPEC §4). ``mode`` is never changed: the
    mode flags decide it, and the TUI reads ``stored.mode`` for its initial choice. ``stored``
    None loads the saved settings (a ConfigError if the file is broken).

    Stored backups apply to those of the resulting interfaces they name. Under
    ``-tui-autostart`` (the TUI's elevated relaunch, whose ``-backup`` carries the whole choice)
    none are read: there an empty ``-backup`` means "no backups", which argparse cannot mark as
    explicit.
    """
    stored = stored if stored is not None else load_settings()
    explicit = config.explicit
    changes: dict[str, Any] = {}
    if "ctrl" not in explicit and stored.ctrl:
        changes["control_port"] = stored.ctrl
    port = changes.get("control_port", config.control_port)
    if "server" not in explicit and stored.server:
        changes["server"] = parse_server(stored.server, port)
    if "ifaces" not in explicit and stored.ifaces:
        changes["ifaces"] = stored.ifaces
    ifaces = changes.get("ifaces", config.ifaces)
    if "backup" in explicit:
        unknown = [name for name in config.backup_ifaces if ifaces and name not in ifaces]
        if unknown:
            raise ConfigError(
                f"-backup {unknown[0]!r} is not one of the interfaces ({', '.join(ifaces)}, "
                "saved in the settings); name it in -ifaces too"
            )
    elif stored.backup and not config.tui_autostart:
        changes["backup_ifaces"] = tuple(name for name in stored.backup if name in ifaces)
    if "client" not in explicit and stored.client:
        changes["client_name"] = stored.client
    if "pki" not in explicit and stored.pki:
        changes["pki_dir"] = expand_pki(stored.pki)
    return dataclasses.replace(config, **changes)


def settings_of(config: ClientConfig, mode: Mode) -> StoredSettings:
    """What to save after a start (or an edit in the TUI): the values of ``config``."""
    return StoredSettings(
        server=str(config.server) if config.server is not None else "",
        mode=mode.value if mode.value in STORED_MODES else Mode.BONDING.value,
        ifaces=config.ifaces,
        client=config.client_name,
        pki=str(config.pki_dir) if config.pki_dir is not None else "",
        ctrl=config.control_port,
        backup=tuple(name for name in config.backup_ifaces if name in config.ifaces),
    )
