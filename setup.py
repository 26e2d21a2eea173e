"""Build of asyncmongo._core, the C core over libmongoc and libbson (found with pkg-config).

The compiler flags are looked up when the extension is built, not when this file is imported, so an
sdist can be made (and its metadata read) on a machine without libmongoc; building the extension
needs libmongoc and libbson 1.23 or newer and says how to get them when they are missing.

ASYNCMONGO_SANITIZE=1 builds it with AddressSanitizer and UndefinedBehaviorSanitizer
(see README.rst, "Sanitizer build"); ASYNCMONGO_DEBUG=1 builds without optimisation.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGES = ("libmongoc-1.0", "libbson-1.0")
MIN_VERSION = "1.23"
APT_HINT = (
    f"asyncmongo needs libmongoc and libbson ({MIN_VERSION} or newer) and pkg-config to build.\n"
    "On Debian or Ubuntu:  apt-get install libmongoc-dev libbson-dev pkg-config\n"
    "(or install the binary wheel, which carries its own copies: pip install --only-binary :all: "
    "asyncmongo-driver)"
)


def pkg_config(*args):
    if not shutil.which("pkg-config"):
        sys.exit("error: pkg-config not found.\n" + APT_HINT)
    try:
        out = subprocess.run(
            ["pkg-config", *args, *PACKAGES], check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        found = (exc.stderr or "").strip() or "not found by pkg-config"
        sys.exit(f"error: {' '.join(PACKAGES)} {MIN_VERSION}+: {found}\n{APT_HINT}")
    return out.split()


def check_version():
    # --modversion fails, with pkg-config's own message, when a package is missing;
    # --atleast-version only answers by its exit status.
    versions = pkg_config("--modversion")
    ok = subprocess.run(["pkg-config", f"--atleast-version={MIN_VERSION}", *PACKAGES]).returncode == 0
    if not ok:
        found = ", ".join(f"{p} {v}" for p, v in zip(PACKAGES, versions))
        sys.exit(f"error: pkg-config found {found}; {MIN_VERSION} or newer is needed.\n{APT_HINT}")


def flags():
    check_version()
    cflags = pkg_config("--cflags")
    libs = pkg_config("--libs")
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    extra_compile = [f for f in cflags if not f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    extra_compile += ["-std=gnu11", "-Wall", "-Wextra"]
    extra_link = ["-pthread"]
    if os.environ.get("ASYNCMONGO_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        extra_compile += san + ["-O1", "-g"]
        extra_link += san
    elif os.environ.get("ASYNCMONGO_DEBUG"):
        extra_compile += ["-O0", "-g"]
    else:
        extra_compile += ["-O2"]
    return dict(
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries,
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )


class build_ext_pkgconfig(build_ext):
    """build_ext that asks pkg-config for libmongoc's flags at build time."""

    def build_extensions(self):
        found = flags()
        for ext in self.extensions:
            for key, values in found.items():
                getattr(ext, key).extend(values)
        super().build_extensions()


SOURCES = [
    "module.c", "client.c", "completion.c", "jobs.c", "commands.c", "bulk.c", "sessions.c",
    "workers.c", "errors.c", "log.c", "apm.c", "stream.c", "codec.c", "decode.c", "encode.c",
    "topology.c", "sdam.c",
]

setup(
    ext_modules=[
        Extension(
            "asyncmongo._core",
            sources=[os.path.join("csrc", s) for s in SOURCES],
            depends=[os.path.join("csrc", h) for h in ("asyncmongo.h", "codec.h")],
        )
    ],
    cmdclass={"build_ext": build_ext_pkgconfig},
)
