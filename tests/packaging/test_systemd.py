"""packaging/systemd: the units pass ``systemd-analyze verify`` and keep their sandbox."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
NAMES = ("fluxify-server", "fluxify-client")
ANALYZE = shutil.which("systemd-analyze")
requires_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing (scripts/setup installs the systemd package)"
)
MAX_EXPOSURE = 4.0  # systemd-analyze security: 0 locked down .. 10 unprotected; "OK" below 4.5


def installed_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this venv's program (verify checks it exists)."""
    text = (UNITS / f"{name}.service").read_text()
    program = Path(sys.executable).parent / name
    copy = tmp_path / f"{name}.service"
    copy.write_text(text.replace(f"/usr/local/bin/{name}", str(program)))
    return copy


def service_section(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (UNITS / f"{name}.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@requires_analyze
@pytest.mark.parametrize("name", NAMES)
def test_the_unit_verifies_without_a_warning(tmp_path: Path, name: str) -> None:
    assert ANALYZE is not None
    unit = installed_copy(tmp_path, name)
    result = subprocess.run(
        [ANALYZE, "verify", unit], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings


@requires_analyze
@pytest.mark.parametrize("name", NAMES)
def test_the_sandbox_is_tight(tmp_path: Path, name: str) -> None:
    assert ANALYZE is not None
    unit = installed_copy(tmp_path, name)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("name", NAMES)
def test_only_the_network_capabilities_and_the_tun_device(name: str) -> None:
    unit = service_section(name)
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert unit[key] == ["CAP_NET_ADMIN CAP_NET_RAW"], key
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/net/tun rw"),
        ("RuntimeDirectory", "fluxify"),
        ("RuntimeDirectoryPreserve", "yes"),  # the undo journal outlives a crash
        ("Environment", "FLUXIFY_STATE_DIR=/run/fluxify"),  # where `status` looks
        ("KillSignal", "SIGTERM"),
    ):
        assert unit[key] == [value], key
    assert unit["ProtectHome"][0] in {"yes", "tmpfs"}
    assert "ProtectKernelTunables" not in unit  # forwarding and rp_filter are /proc/sys/net
    assert unit["ExecStart"][0].startswith(f"/usr/local/bin/{name} ")
