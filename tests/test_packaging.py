"""Packaging: ``pip install .`` into a fresh virtual environment gives a working ``utkface`` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import utkface_core

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "requirements.txt")


def test_pyproject_declares_the_console_script_and_the_pinned_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["utkface"] == "utkface_core.cli:main"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    assert project["tool"]["ruff"]["line-length"] == 120
    assert {"E", "F", "I", "B", "UP"} <= set(project["tool"]["ruff"]["lint"]["select"])


def _run(args: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_pip_install_gives_a_working_utkface_command(tmp_path):
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the repository.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "utkface_core", src / "utkface_core", ignore=shutil.ignore_patterns("__pycache__"))

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    # No network: the new environment sees this environment's packages (TensorFlow, setuptools...) through a .pth
    # file, after its own site-packages, so the installed utkface_core is the one imported.
    (site / "dev-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    install = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            src,
        ],
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    script = venv / "bin" / "utkface"
    assert script.is_file()
    shown = _run([script, "--help"], cwd=tmp_path, timeout=300)
    assert shown.returncode == 0, shown.stderr
    for command in ("index", "train", "evaluate", "predict", "export"):
        assert command in shown.stdout
    module = _run([python, "-m", "utkface_core", "--help"], cwd=tmp_path, timeout=300)
    assert module.stdout == shown.stdout  # the script is `python -m utkface_core`

    where = _run(
        [
            python,
            "-c",
            "import utkface_core, importlib.metadata as m; print(utkface_core.__file__); "
            "print(m.version('utkface-core')); print(m.requires('utkface-core'))",
        ],
        cwd=tmp_path,
    )
    location, version, requires = where.stdout.strip().splitlines()
    assert Path(location).resolve().is_relative_to(site.resolve())
    assert version == utkface_core.__version__
    pins = [
        line.strip()
        for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pins and all(pin in requires for pin in pins)  # the installed package needs exactly the pinned set

    layers = _run(
        [
            python,
            "-c",
            "import importlib.util as u; "
            "[print(u.find_spec(f'utkface_core.{p}').origin) for p in ('data', 'inference', 'training', 'evaluation')]",
        ],
        cwd=tmp_path,
    )
    origins = layers.stdout.split()
    assert len(origins) == 4, layers.stderr  # every layer subpackage is in the wheel
    assert all(Path(origin).resolve().is_relative_to(site.resolve()) for origin in origins)

    bad = _run([script, "export", str(tmp_path / "no-such-run")], cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
