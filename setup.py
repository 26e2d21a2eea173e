"""Build of asyncmongo._core, the C core over libmongoc and libbson (found with pkg-config).

ASYNCMONGO_SANITIZE=1 builds it with AddressSanitizer and UndefinedBehaviorSanitizer
(see README.rst, "Sanitizer build"); ASYNCMONGO_DEBUG=1 builds without optimisation.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup

PACKAGES = ("libmongoc-1.0", "libbson-1.0")
APT_HINT = (
    "asyncmongo needs libmongoc and libbson (1.23 or newer) and pkg-config to build.\n"
    "On Debian or Ubuntu:  apt-get install libmongoc-dev libbson-dev pkg-config"
)


def pkg_config(*args):
    if not shutil.which("pkg-config"):
        sys.exit("error: pkg-config not found.\n" + APT_HINT)
    try:
        out = subprocess.run(
            ["pkg-config", *args, *PACKAGES], check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        sys.exit(f"error: {exc.stderr.strip()}\n{APT_HINT}")
    return out.split()


def flags():
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


SOURCES = [
    "module.c", "client.c", "completion.c", "jobs.c", "commands.c", "bulk.c", "sessions.c",
    "workers.c", "errors.c", "log.c", "apm.c", "topology.c", "sdam.c",
]

setup(
    ext_modules=[
        Extension(
            "asyncmongo._core",
            sources=[os.path.join("csrc", s) for s in SOURCES],
            depends=[os.path.join("csrc", "asyncmongo.h")],
            **flags(),
        )
    ],
)
