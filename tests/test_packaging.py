"""The build from source as a user without the C libraries meets it, and the package's declared
metadata. (The wheel itself is built, installed and tested by scripts/wheel.sh.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

# Packaging: builds, metadata, stubs and types, none of which depends on the loop or the
# wake-up path: the default and sanitizer modes run them (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

tomllib = pytest.importorskip("tomllib")  # Python 3.11+: the suite's own Python


@pytest.fixture
def source_copy(tmp_path):
    """What an sdist holds, in a folder of its own (so no build touches the tree's extension)."""
    for name in ("setup.py", "pyproject.toml", "README.rst", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    shutil.copytree(os.path.join(ROOT, "csrc"), tmp_path / "csrc")
    shutil.copytree(os.path.join(ROOT, "asyncmongo"), tmp_path / "asyncmongo",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tmp_path


def build_ext(src, **env):
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(src / "out"),
         "--build-temp", str(src / "tmp")],
        cwd=src, capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )


def test_build_without_libmongoc_says_what_to_install(source_copy, tmp_path_factory):
    # An empty pkg-config search path: libmongoc and libbson are not installed, as far as it knows.
    empty = tmp_path_factory.mktemp("no-pc")
    res = build_ext(source_copy, PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH="")
    assert res.returncode != 0
    assert "libmongoc-1.0 libbson-1.0 1.23+" in res.stderr
    assert "apt-get install libmongoc-dev libbson-dev pkg-config" in res.stderr
    assert "pip install --only-binary :all: asyncmongo-driver" in res.stderr
    assert not (source_copy / "out").exists()


def test_build_with_too_old_libmongoc_says_so(source_copy, tmp_path_factory):
    pcdir = tmp_path_factory.mktemp("old-pc")
    for name in ("libmongoc-1.0", "libbson-1.0"):
        (pcdir / f"{name}.pc").write_text(
            f"Name: {name}\nDescription: too old\nVersion: 1.22.0\nCflags:\nLibs:\n")
    res = build_ext(source_copy, PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH="")
    assert res.returncode != 0
    assert "1.23" in res.stderr and "1.22.0" in res.stderr
    assert "apt-get install libmongoc-dev" in res.stderr


def test_declared_metadata():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "asyncmongo-driver"
    assert project["requires-python"] == ">=3.10"
    assert project["dependencies"] == ["pymongo>=4.14,<5"]
    extras = project["optional-dependencies"]
    assert extras["tornado"] == ["tornado>=6.4"]
    assert "SecantusDB==0.7.0b3" in extras["testing"]
    assert project["entry-points"]["pytest11"] == {
        "asyncmongo.testing.plugin": "asyncmongo.testing.plugin"}
    # The plugin's pin and the suite's server helpers agree on SecantusDB's version.
    from asyncmongo.testing import SECANTUS_VERSION

    assert f"SecantusDB=={SECANTUS_VERSION}" in extras["testing"]
    versions = {c.rsplit(":: ", 1)[1] for c in project["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}


def test_tornado_stub_matches_the_runtime():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "tornado_stub.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_example_apps_and_public_types_pass_mypy_strict():
    # pyproject.toml's [tool.mypy]: the example apps (FastAPI ones included), the Tornado stub and
    # the testing package, strict, against the public API's types (the wheel job checks the
    # driver-only examples again from an installed wheel).
    mypy = pytest.importorskip("mypy")
    assert mypy
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Success: no issues found" in res.stdout
