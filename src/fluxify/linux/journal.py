"""The change journal: every host change is persisted with its exact inverse before it is applied.

``undo()`` replays the inverses newest first; ``repair()`` undoes what a crashed run left behind.
The journal runs as root, so it trusts only what it wrote itself: a state directory and a journal
owned by the effective user and writable by nobody else, records of the shapes it writes, and
among those only the sysctls and the nftables table Fluxify changes.
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from fluxify.errors import HostError
from fluxify.linux import nftables, sysctl
from fluxify.linux.netlink import ExistsError, Netlink, NotFoundError
from fluxify.linux.netns import NETNS_DIR
from fluxify.linux.routing import PROTO_STATIC, Route, Rule, effective_metric
from fluxify.linux.statefiles import DEFAULT_STATE_DIR

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
Record = dict[str, Any]
Leg = tuple[str | None, str | None]  # (gateway, ifname) of a route or of one of its nexthops

# The only kernel parameters Fluxify changes (slash notation, see ``sysctl.sysctl_relative``):
# forwarding on the server, loose reverse-path filtering on uplinks, L4 multipath hashing.
_OWN_SYSCTLS = re.compile(
    r"net/ipv4/ip_forward|net/ipv6/conf/all/forwarding|net/ipv[46]/fib_multipath_hash_policy"
    r"|net/ipv4/conf/[^/]{1,15}/rp_filter"
)
OWN_NFT_TABLES = frozenset({nftables.TABLE})
_ACTIONS = {"route": {"delete", "add", "restore"}}
_NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNTRUSTED_MODE_BITS = stat.S_IWGRP | stat.S_IWOTH
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "sysctl": {"name": (str,), "value": (str,)},
    "nftables": {"table": (str,), "restore": (str, type(None))},
    "link": {"ifname": (str,), "up": (bool, type(None)), "mtu": (int, type(None))},
    "address": {"action": (str,), "ifname": (str,), "address": (str,)},
    "rule": {"action": (str,), "rule": (dict,)},
    "route": {"action": (str,), "route": (dict,)},
}


class Journal:
    """The journal of one owner (``client``, ``server``, ...) in one network namespace.

    Inverses are plain JSON records (``{"kind": "route", "action": "delete", ...}``), so a new
    process can replay them. The file ``<state_dir>/<owner>.json`` exists while changes are
    outstanding; ``<owner>.lock`` is held (flock) while this object is open, so a second live
    process of the same owner is refused instead of undoing the first one's changes. Used as a
    context manager, leaving the block undoes every change, whatever the exit path.
    Not thread-safe; one journal per process and owner.
    """

    def __init__(
        self, owner: str, *, netns: str | None = None, state_dir: Path = DEFAULT_STATE_DIR
    ) -> None:
        if not owner.isidentifier():
            raise HostError(f"Journal owner {owner!r} must be a plain word such as 'client'.")
        self.owner = owner
        self.netns = netns
        self.path = state_dir / f"{owner}.json"
        self._inverses: list[Record] = []
        self._netlink: Netlink | None = None
        self._lock_fd = _lock(state_dir, owner)

    @property
    def netlink(self) -> Netlink:
        """Netlink access to this journal's namespace, opened on first use."""
        if self._netlink is None:
            self._netlink = Netlink(self.netns)
        return self._netlink

    @property
    def pending(self) -> list[Record]:
        """The inverses not yet replayed, oldest first (a copy)."""
        return list(self._inverses)

    # changes -------------------------------------------------------------------------------

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        before = self.netlink.link(ifname)
        inverse = {"kind": "link", "ifname": ifname, "up": before.up, "mtu": before.mtu}
        self._change(inverse, lambda: self.netlink.set_link(ifname, up=up, mtu=mtu))

    def add_address(self, ifname: str, address: str, *, nodad: bool = False) -> None:
        inverse = {"kind": "address", "action": "delete", "ifname": ifname, "address": address}
        self._change(inverse, lambda: self.netlink.add_address(ifname, address, nodad=nodad))

    def add_route(self, route: Route) -> None:
        inverse = {"kind": "route", "action": "delete", "route": route.to_record()}
        self._change(inverse, lambda: self.netlink.add_route(route))

    def replace_route(self, route: Route) -> None:
        """Replace (or add) ``route``; undo puts back exactly the route(s) it displaced."""
        previous = [old.to_record() for old in self.netlink.replaced_by(route)]
        inverse: Record = {"kind": "route", "action": "restore", "route": route.to_record()}
        inverse["previous"] = previous
        self._change(inverse, lambda: self.netlink.replace_route(route))

    def delete_route(self, route: Route) -> None:
        """Delete ``route`` (give it as listed by ``Netlink.routes`` so undo re-adds it exactly)."""
        inverse = {"kind": "route", "action": "add", "route": route.to_record()}
        self._change(inverse, lambda: self.netlink.delete_route(route))

    def add_rule(self, rule: Rule) -> None:
        inverse = {"kind": "rule", "action": "delete", "rule": rule.to_record()}
        self._change(inverse, lambda: self.netlink.add_rule(rule))

    def set_sysctl(self, name: str, value: str) -> None:
        if not own_sysctl(name):
            raise HostError(f"{name} is not a kernel parameter Fluxify changes; refusing to.")
        before = sysctl.read_sysctl(name, self.netns)
        inverse = {"kind": "sysctl", "name": name, "value": before}
        self._change(inverse, lambda: sysctl.write_sysctl(name, value, self.netns))

    def apply_nftables(self, ruleset: nftables.Ruleset) -> None:
        """Replace our nftables table with ``ruleset``; undo restores the table as it was."""
        if ruleset.table not in OWN_NFT_TABLES:
            raise HostError(f"nftables table {ruleset.table!r} is not Fluxify's; refusing it.")
        script = nftables.render(ruleset)
        before = nftables.dump_table(ruleset.table, self.netns)
        inverse = {"kind": "nftables", "table": ruleset.table, "restore": before}
        self._change(inverse, lambda: nftables.apply(script, self.netns))

    def _change(self, inverse: Record, apply: Callable[[], None]) -> None:
        # Persist first: a crash right after the kernel applied the change still leaves the
        # inverse on disk. If applying fails, nothing changed, so the inverse must go (undoing
        # a failed "add" of an existing route would delete a route that is not ours).
        self._inverses.append(inverse)
        self._save()
        try:
            apply()
        except BaseException:
            self._inverses.pop()
            self._save()
            raise

    # undo ----------------------------------------------------------------------------------

    def undo(self) -> None:
        """Replay every inverse, newest first; "already gone" counts as done.

        Every inverse is tried even when one fails; then ``HostError`` lists the failures.
        """
        failures = _replay(self._inverses, self.netns, self._netlink)
        self._inverses.clear()
        self._save()
        if failures:
            raise HostError("Could not restore everything: " + "; ".join(failures))

    def repair(self) -> int:
        """Undo the journal a previous, crashed run of this owner left; return its length."""
        if self._inverses:
            raise HostError("repair() belongs before the first change, not after.")
        text = _read_trusted(self.path)
        if text is None:
            return 0
        try:
            saved = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise HostError(f"The journal {self.path} is unreadable ({exc}); check it.") from exc
        problem = journal_problem(saved)
        if problem is not None:
            raise HostError(
                f"The journal {self.path} is not one Fluxify wrote ({problem}); nothing was "
                "undone. Undo what it lists by hand if needed, then delete it."
            )
        inverses: list[Record] = saved["inverses"]
        netns: str | None = saved.get("netns")
        log.warning("repairing %d change(s) left by a previous %s run", len(inverses), self.owner)
        if netns is not None and not (NETNS_DIR / netns).exists():
            # Everything that run changed lived in a namespace that no longer exists.
            failures: list[str] = []
        elif netns == self.netns:
            failures = _replay(inverses, netns, self.netlink)
        else:
            failures = _replay(inverses, netns, None)
        self.path.unlink(missing_ok=True)
        if failures:
            raise HostError("Could not repair everything: " + "; ".join(failures))
        return len(inverses)

    def close(self) -> None:
        """Release the lock and netlink; outstanding inverses stay on disk for ``repair``."""
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.undo()
        finally:
            self.close()

    def _save(self) -> None:
        if not self._inverses:
            self.path.unlink(missing_ok=True)
            return
        body = {
            "version": JOURNAL_VERSION,
            "owner": self.owner,
            "netns": self.netns,
            "pid": os.getpid(),
            "inverses": self._inverses,
        }
        _write_atomically(self.path, json.dumps(body, indent=1))


def _replay(inverses: list[Record], netns: str | None, netlink: Netlink | None) -> list[str]:
    """Apply ``inverses`` newest first; return one sentence per inverse that failed."""
    own = netlink is None
    failures: list[str] = []
    try:
        for record in reversed(inverses):
            if netlink is None and record["kind"] in {"link", "address", "route", "rule"}:
                netlink = Netlink(netns)
            try:
                _revert(record, netns, netlink)
            except NotFoundError:
                log.debug("already gone: %s", record)
            except HostError as exc:
                log.error("undo failed: %s", exc)
                failures.append(str(exc))
    finally:
        if own and netlink is not None:
            netlink.close()
    return failures


def _revert(record: Record, netns: str | None, netlink: Netlink | None) -> None:
    kind = record["kind"]
    if kind == "sysctl":
        sysctl.write_sysctl(record["name"], record["value"], netns)
    elif kind == "nftables":
        table = record["table"]
        if record["restore"] is None:
            nftables.delete_table(table, netns)
        else:
            # One transaction: declare, delete, then recreate the table as it was.
            reset = f"table inet {table} {{}}\ndelete table inet {table}\n"
            nftables.apply(reset + record["restore"], netns)
    elif netlink is None:
        raise HostError(f"Undo record of unknown kind {kind!r}.")
    elif kind == "link":
        netlink.set_link(record["ifname"], up=record["up"], mtu=record["mtu"])
    elif kind == "address":
        netlink.delete_address(record["ifname"], record["address"])
    elif kind == "rule":
        netlink.delete_rule(Rule.from_record(record["rule"]))
    elif kind == "route":
        _revert_route(record, netlink)
    else:
        raise HostError(f"Undo record of unknown kind {kind!r}.")


def _revert_route(record: Record, netlink: Netlink) -> None:
    route = Route.from_record(record["route"])
    action = record["action"]
    if action == "delete":
        _delete_ours(netlink, route)
    elif action == "add":
        _add_unless_present(netlink, route)
    elif action == "restore":
        previous = [Route.from_record(old) for old in record["previous"]]
        # A displaced route naming a device that has since vanished cannot come back (the
        # kernel would have dropped it with the device); ours must still go.
        restorable = [old for old in previous if not _vanished_devices(netlink, old)]
        for old in previous:
            if old not in restorable:
                log.warning("cannot restore %s: its device is gone", old)
        if not restorable:
            _delete_ours(netlink, route)
            return
        # Replacing with the old route works whether or not the new one made it in (crash).
        netlink.replace_route(restorable[0])
        for old in restorable[1:]:
            _add_unless_present(netlink, old)
    else:
        raise HostError(f"Undo record with unknown route action {action!r}.")


def _delete_ours(netlink: Netlink, route: Route) -> None:
    """Delete ``route``, which we added; also when a device it names has vanished since.

    The delete names the route's devices, so it cannot be built once one is gone. The kernel
    may still hold what is left of the route (IPv6 keeps a multipath route with its remaining
    nexthops), so that is found by its key instead: dst, table, metric, type and protocol, all
    exact, and only when every leg it has left is one of ours. Each is deleted as listed, never
    by a wildcard (a kernel delete without a metric matches any metric).
    """
    try:
        netlink.delete_route(route)
        return
    except NotFoundError:
        gone = _vanished_devices(netlink, route)
        if not gone:
            raise
    log.info("%s vanished; deleting what is left of the route to %s", ", ".join(gone), route.dst)
    for remnant in _remnants(netlink, route):
        log.info("deleting %s", remnant)
        netlink.delete_route(remnant)


def _vanished_devices(netlink: Netlink, route: Route) -> list[str]:
    named = [route.ifname, *(hop.ifname for hop in route.nexthops)]
    present = {link.ifname for link in netlink.links()}
    return sorted({name for name in named if name is not None and name not in present})


def _remnants(netlink: Netlink, route: Route) -> list[Route]:
    """The kernel's routes at ``route``'s exact key whose every leg is a leg of ``route``."""
    metric = effective_metric(route)
    proto = PROTO_STATIC if route.proto is None else route.proto
    dst = ip_network(route.dst)
    ours = _legs(route)
    return [
        listed
        for listed in netlink.routes(route.family, route.table)
        if listed.table == route.table
        and ip_network(listed.dst) == dst
        and effective_metric(listed) == metric
        and listed.type == route.type
        and listed.proto == proto
        and all(_leg_among(leg, ours) for leg in _legs(listed))
    ]


def _legs(route: Route) -> list[Leg]:
    if route.nexthops:
        return [(_address(hop.gateway), hop.ifname) for hop in route.nexthops]
    return [(_address(route.gateway), route.ifname)]


def _leg_among(leg: Leg, ours: list[Leg]) -> bool:
    # A leg recorded without a device matched whichever device the kernel chose.
    gateway, ifname = leg
    return any(gateway == g and (i is None or ifname == i) for g, i in ours)


def _address(text: str | None) -> str | None:
    return None if text is None else str(ip_address(text))


def _add_unless_present(netlink: Netlink, route: Route) -> None:
    try:
        netlink.add_route(route)
    except ExistsError:
        log.debug("already present: %s", route)


def own_sysctl(name: str) -> bool:
    """Whether ``name`` is one of the kernel parameters Fluxify changes (and so may undo)."""
    try:
        return _OWN_SYSCTLS.fullmatch(sysctl.sysctl_relative(name)) is not None
    except HostError:
        return False


def journal_problem(saved: object) -> str | None:
    """What makes ``saved`` (a parsed journal) other than what ``Journal`` writes, or None."""
    if not isinstance(saved, dict):
        return f"it holds a JSON {type(saved).__name__}, not an object"
    netns = saved.get("netns")
    if netns is not None and not (isinstance(netns, str) and _NETNS_NAME.fullmatch(netns)):
        return f"netns {netns!r} is not a namespace name"
    inverses = saved.get("inverses")
    if not isinstance(inverses, list):
        return '"inverses" is not a list'
    for number, record in enumerate(inverses, 1):
        problem = _record_problem(record)
        if problem is not None:
            return f"record {number}: {problem}"
    return None


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "not an object"
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        return f"unknown kind {kind!r}"
    fields = _FIELDS[kind]
    for name, types in fields.items():
        value = record.get(name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{kind} record without a valid {name!r}"
    if record.get("action", "delete") not in _ACTIONS.get(kind, {"delete"}):
        return f"{kind} record with unknown action {record['action']!r}"
    if kind == "sysctl" and not own_sysctl(record["name"]):
        return f"{record['name']!r} is not a kernel parameter Fluxify changes"
    if kind == "nftables" and record["table"] not in OWN_NFT_TABLES:
        return f"nftables table {record['table']!r} is not Fluxify's"
    try:
        if kind == "rule":
            Rule.from_record(record["rule"])
        elif kind == "route":
            Route.from_record(record["route"])
            if record["action"] == "restore":
                for old in record["previous"]:
                    Route.from_record(old)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"{kind} record that does not parse ({exc!r})"
    return None


def _read_trusted(path: Path) -> str | None:
    """The journal's text if it exists and only we could have written it, else HostError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HostError(
            f"Cannot open the journal {path}: {exc.strerror} (a symbolic link is refused); "
            "delete it."
        ) from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        problem = _untrusted(info, "journal")
        if problem is not None:
            raise HostError(
                f"The journal {path} {problem}, so it may not be ours; nothing was undone. "
                "Check what it lists, then delete it."
            )
        try:
            return file.read().decode("utf-8", errors="replace")
        except OSError as exc:
            raise HostError(f"Cannot read the journal {path}: {exc.strerror}.") from exc


def _untrusted(info: os.stat_result, what: str) -> str | None:
    euid = os.geteuid()
    if what == "journal" and not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_uid != euid:
        return f"is owned by uid {info.st_uid}, not by this user (uid {euid})"
    if info.st_mode & _UNTRUSTED_MODE_BITS:
        return f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _check_state_dir(state_dir: Path) -> None:
    info = os.stat(state_dir)
    problem = _untrusted(info, "directory")
    if problem is not None:
        raise HostError(
            f"The state directory {state_dir} {problem}; Fluxify keeps its undo journal there "
            f"and will not trust it. Remove it, or run: chown {os.geteuid()} {state_dir} && "
            f"chmod 700 {state_dir}."
        )


def _lock(state_dir: Path, owner: str) -> int:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_state_dir(state_dir)
        fd = os.open(
            state_dir / f"{owner}.lock",
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
    except OSError as exc:
        raise HostError(f"Cannot use state directory {state_dir}: {exc.strerror}.") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HostError(
            f"Another fluxify {owner} is running (it holds {state_dir}/{owner}.lock); "
            "stop it first."
        ) from None
    return fd


def _write_atomically(path: Path, text: str) -> None:
    # mkstemp (O_EXCL, 0600): never a fixed name someone could have planted as a symlink.
    temporary: str | None = None
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise HostError(f"Cannot write the journal {path}: {exc.strerror}.") from exc
