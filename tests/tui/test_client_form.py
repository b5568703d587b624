"""The client form's rules without a screen: what Start needs, what runs, what is saved."""

from pathlib import Path

from fluxify.client.config import ClientConfig, Mode, ServerAddress
from fluxify.tui.client_form import ClientForm
from fluxify.tui.client_sources import InterfaceInfo, is_hidden

UP = [
    InterfaceInfo("a", True, "192.0.2.2", "192.0.2.1"),
    InterfaceInfo("b", True, "198.51.100.2", "198.51.100.1"),
    InterfaceInfo("c", False, "203.0.113.2", "203.0.113.1"),  # down
]


def form(**kwargs: object) -> ClientForm:
    base = ClientForm(base=ClientConfig(control_port=9443), mode=Mode.BONDING, pki_dir=Path("/p"))
    for key, value in kwargs.items():
        setattr(base, key, value)
    return base


def test_bonding_needs_server_cert_and_two_usable_interfaces() -> None:
    f = form(interfaces=UP, chosen={"a", "c", "gone"})
    assert f.missing() == [
        "a server",
        "a client certificate in /p",
        "at least 2 interfaces with a gateway (have 1)",
    ]
    f.server_text, f.cert_name, f.chosen = "bad host", "alice", {"a", "b"}
    assert f.missing() == ["a valid server host[:port]"]
    f.server_text = "vpn"
    assert f.missing() == []
    run = f.run_config()
    assert run.server == ServerAddress("vpn", 9443)
    assert run.ifaces == ("a", "b")
    assert run.client_name == "alice"
    assert run.pki_dir == Path("/p")


def test_load_balance_needs_only_interfaces() -> None:
    f = form(mode=Mode.LOAD_BALANCE, interfaces=UP, chosen={"a", "b"})
    assert f.missing() == []
    assert f.run_config().mode is Mode.LOAD_BALANCE


def test_saved_settings_keep_absent_interfaces() -> None:
    f = form(interfaces=UP, chosen={"b", "gone"}, server_text="vpn:1", cert_name="x")
    saved = f.settings()
    assert saved.ifaces == ("b", "gone")
    assert saved.server == "vpn:1"
    assert saved.mode == "bonding"
    assert saved.pki == ""  # no -pki given: the default stays the default


def test_virtual_interfaces_are_hidden_but_veth_is_not() -> None:
    assert is_hidden("lo", None)
    assert is_hidden("docker0", "bridge")
    assert is_hidden("tun3", "tun")
    assert is_hidden("mybr", "bridge")
    assert not is_hidden("veth-up0", "veth")
    assert not is_hidden("eth0", None)


def test_backups_run_and_save_only_among_the_chosen() -> None:
    f = form(interfaces=UP, chosen={"a", "b", "gone"}, backup={"b", "gone", "dropped"})
    assert f.backup_ifaces == ["b"]
    assert f.run_config().backup_ifaces == ("b",)  # only what exists and is selected runs
    assert f.settings().backup == ("b", "gone")  # an absent one keeps its priority
