"""The package as a user installs it: build the wheel from a copy of the checkout, install it (not editable)
into a fresh venv, and run it from a directory outside the repository, with the repository not on sys.path.

The venv gets the dependencies (torch & co., 5 GB) from the test interpreter's site-packages through a `.pth`
file pointing at a folder of links to them, minus this project's own editable install, so the only
`diffsmooth` the venv can import is the installed wheel. About 20 s (wheel build, install, seven interpreter
starts), so it is not marked slow.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_repo


def _sh(cmd, cwd, env, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _dependencies_dir(dest: Path) -> Path:
    """Links to the test interpreter's installed packages, without any trace of this project's own install."""
    dest.mkdir()
    own = ("diffsmooth", "__editable__", "__editable___diffsmooth")
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            if entry.name.startswith(own) or entry.suffix == ".pth" or (dest / entry.name).exists():
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, outside dir, env): the wheel installed into a fresh venv; `outside` is a cwd far from the repo."""
    root = tmp_path_factory.mktemp("wheel")
    src = copy_repo(root / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_NO_INDEX"], env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1", "1"
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", src],
        root, env)
    wheels = list((root / "dist").glob("diffsmooth-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", venv], root, env)
    purelib = Path(_sh([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       root, env).stdout.strip())
    (purelib / "dependencies.pth").write_text(str(_dependencies_dir(root / "deps")) + "\n")
    # pip runs inside the new venv (it comes through the .pth), so the script's shebang is the venv's python
    _sh([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", wheels[0]], root, env)
    outside = root / "elsewhere"
    outside.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, outside, env


def test_imports_the_installed_package(installed):
    venv, outside, env = installed
    out = _sh([venv / "bin" / "python", "-c", "import sys, diffsmooth; print(diffsmooth.__file__); print(sys.path)"],
              outside, env).stdout.splitlines()
    assert out[0].startswith(str(venv)), out[0]
    assert str(REPO) not in out[1]


def test_version(installed):
    from diffsmooth import __version__

    venv, outside, env = installed
    assert _sh([venv / "bin" / "diffsmooth", "--version"], outside, env).stdout.strip() == f"diffsmooth {__version__}"
    assert _sh([venv / "bin" / "python", "-m", "diffsmooth", "--version"], outside, env).stdout.strip() == (
        f"diffsmooth {__version__}")


def test_plan_and_config_validation_outside_the_repository(installed, tmp_path):
    venv, outside, env = installed
    cfg = yaml.safe_load((REPO / "config" / "fast.yaml").read_text())
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = _sh([venv / "bin" / "diffsmooth", "plan", "--configfile", good, "--results", tmp_path / "results"],
               outside, env)
    assert "digits-fast" in proc.stdout and "table4" in proc.stdout, proc.stdout
    cfg["certify"]["N"] = "many"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = _sh([venv / "bin" / "diffsmooth", "plan", "--configfile", bad], outside, env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "does not match" in proc.stderr and "certify/N" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_package_data_is_installed(installed):
    """The paper's tables and the schemas come from the installed package (importlib.resources)."""
    venv, outside, env = installed
    code = ("from diffsmooth.paper import load_paper_table, table_files; from diffsmooth.resources import resource;"
            "print(len(table_files()), len(load_paper_table(4)), resource('schemas/config.schema.yaml'))")
    out = _sh([venv / "bin" / "python", "-c", code], outside, env).stdout.split()
    assert out[:2] == ["12", "27"] and out[2].startswith(str(venv)), out


def test_metadata(installed):
    venv, outside, env = installed
    code = ("import importlib.metadata as m; d = m.distribution('diffsmooth'); print(d.metadata['License-Expression']);"
            "print(d.metadata.get_all('Project-URL')); print(d.read_text('licenses/LICENSE')[:11])")
    out = _sh([venv / "bin" / "python", "-c", code], outside, env).stdout.splitlines()
    assert out[0] == "MIT" and "arXiv" in out[1] and out[2] == "MIT License", out
