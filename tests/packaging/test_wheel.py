"""The project builds as a wheel, and an install of it gives four commands with --version."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("fluxify-server", "fluxify-client", "fluxify-lab", "fluxify-bench")


def run(*argv: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_wheel_builds_and_installs_working_commands(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "source"
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    shutil.copytree(ROOT / "src", source / "src", ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path, source)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = tmp_path.glob("fluxify-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert {"fluxify/py.typed", "fluxify/cli.py", "fluxify/observe/metrics.py"} <= names
    assert all(f"{script} = fluxify.cli:" in scripts for script in SCRIPTS), scripts

    # A fresh venv with the wheel, its dependencies borrowed from this one (no index needed).
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.stdout.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    version = metadata.version("fluxify")
    env = {**os.environ, "FLUXIFY_STATE_DIR": str(tmp_path / "state")}
    for script in SCRIPTS:
        result = run(venv / "bin" / script, "--version", cwd=tmp_path, env=env)
        assert result.stdout.strip() == f"{script} {version}", result.stderr
    where = run(python, "-c", "import fluxify; print(fluxify.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy, not src/
    status = run(venv / "bin" / "fluxify-server", "status", cwd=tmp_path, env=env)
    assert status.returncode == 1 and "not running" in status.stderr, status.stderr
