"""Adds the licence texts of the shared libraries that ``auditwheel repair`` bundled into a wheel.

    python scripts/wheel_licenses.py WHEEL [--json]

For each library in ``<dist>.libs/`` it finds the system file it was copied from (auditwheel names
the copy ``<name>-<hash8><rest>`` after ``<name><rest>``), the Debian package that owns that file,
and ships the package's ``/usr/share/doc/<package>/copyright`` with every licence of
``/usr/share/common-licenses`` that it cites, under ``<dist>.dist-info/licenses/bundled/``, with a
BUNDLED.txt table. The wheel is re-packed in place (``wheel pack`` rewrites RECORD). It fails if a
bundled library cannot be traced to a package with a copyright file: a wheel must not ship code
whose licence it does not carry.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

COMMON = "/usr/share/common-licenses"
GRAFTED = re.compile(r"^(?P<head>.+?)-[0-9a-f]{8}(?P<tail>\..+)$")


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def dependency_files(extension: str) -> dict[str, str]:
    """basename -> real path of every library the original extension loads (ldd's closure)."""
    found = {}
    for line in run("ldd", extension).splitlines():
        m = re.match(r"\s*\S+ => (/\S+)", line)
        if m:
            real = os.path.realpath(m.group(1))
            found[os.path.basename(real)] = real
    return found


def libmongoc_path() -> str:
    """The system libmongoc the wheel was built against (pkg-config's library directory)."""
    libdir = run("pkg-config", "--variable=libdir", "libmongoc-1.0").strip()
    return os.path.join(libdir, "libmongoc-1.0.so.0")


def owning_package(path: str) -> tuple[str, str]:
    candidates = [path]
    # Debian 12 is usr-merged: dpkg may know the file under /lib or /usr/lib.
    if path.startswith("/usr/lib/"):
        candidates.append(path[len("/usr"):])
    elif path.startswith("/lib/"):
        candidates.append("/usr" + path)
    for candidate in candidates:
        try:
            out = run("dpkg", "-S", candidate)
        except subprocess.CalledProcessError:
            continue
        package = out.split(":", 1)[0].strip()
        version = run("dpkg-query", "-W", "-f=${Version}", package).strip()
        return package, version
    raise SystemExit(f"error: no Debian package owns {path}: cannot ship its licence")


def licence_names(copyright_text: str) -> list[str]:
    """The short names of the licences a machine-readable Debian copyright file cites, in order."""
    names: list[str] = []
    for m in re.finditer(r"^License:[ \t]*(.+)$", copyright_text, re.M):
        for token in re.split(r"\s+or\s+|\s+and\s+|,\s*", m.group(1).strip()):
            token = token.strip()
            if token and token not in names:
                names.append(token)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel")
    parser.add_argument("--json", action="store_true", help="print the bundled libraries as JSON")
    args = parser.parse_args()
    wheel = os.path.abspath(args.wheel)
    work = tempfile.mkdtemp(prefix="wheel-licenses-")
    try:
        run(sys.executable, "-m", "wheel", "unpack", "-d", work, wheel)
        (root,) = glob.glob(os.path.join(work, "*"))
        (libs_dir,) = glob.glob(os.path.join(root, "*.libs"))
        (dist_info,) = glob.glob(os.path.join(root, "*.dist-info"))
        bundled_dir = os.path.join(dist_info, "licenses", "bundled")
        os.makedirs(os.path.join(bundled_dir, "common-licenses"), exist_ok=True)

        # The repaired extension points at the copies; the system's originals are the libraries
        # of the same names that libmongoc, as installed here, loads.
        libmongoc = os.path.realpath(libmongoc_path())
        originals = dependency_files(libmongoc)
        originals[os.path.basename(libmongoc)] = libmongoc
        rows = []
        for copy in sorted(os.listdir(libs_dir)):
            m = GRAFTED.match(copy)
            if not m or m["head"] + m["tail"] not in originals:
                raise SystemExit(f"error: cannot tell which system library {copy} was copied from")
            original = originals[m["head"] + m["tail"]]
            package, version = owning_package(original)
            source = f"/usr/share/doc/{package}/copyright"
            if not os.path.isfile(source):
                raise SystemExit(f"error: {package} (owner of {original}) has no {source}")
            os.makedirs(os.path.join(bundled_dir, package), exist_ok=True)
            shutil.copyfile(source, os.path.join(bundled_dir, package, "copyright"))
            with open(source, encoding="utf-8", errors="replace") as f:
                names = licence_names(f.read())
            for name in names:
                if os.path.isfile(os.path.join(COMMON, name)):
                    shutil.copyfile(os.path.join(COMMON, name),
                                    os.path.join(bundled_dir, "common-licenses", name))
            rows.append({"file": copy, "original": original, "package": package,
                         "version": version, "licenses": names})

        with open(os.path.join(bundled_dir, "BUNDLED.txt"), "w") as f:
            f.write("Shared libraries bundled in this wheel (in the .libs folder beside the package),\n"
                    "copied by auditwheel from Debian 12's packages; each package's copyright file is\n"
                    "in the folder of its name, the licence texts it cites in common-licenses/.\n\n")
            for r in rows:
                f.write(f"{r['file']}\n    from {r['original']}, Debian package {r['package']} "
                        f"{r['version']}\n    licences: {', '.join(r['licenses'])}\n")
        out_dir = tempfile.mkdtemp(prefix="wheel-packed-", dir=work)
        run(sys.executable, "-m", "wheel", "pack", "-d", out_dir, root)
        (packed,) = glob.glob(os.path.join(out_dir, "*.whl"))
        if os.path.basename(packed) != os.path.basename(wheel):
            raise SystemExit(f"error: re-packed wheel is named {os.path.basename(packed)}")
        shutil.move(packed, wheel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"bundled {r['file']:42} {r['package']} {r['version']}: {', '.join(r['licenses'])}")


if __name__ == "__main__":
    main()
