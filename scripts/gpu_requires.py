"""The wheel list of the lent GPU machine (scripts/gpu_wheels.txt): its requirements, and whether they are met.

    python scripts/gpu_requires.py extract WHEELS_DIR [--out FILE]   # Requires-Dist of each pinned wheel
    python scripts/gpu_requires.py check                              # repo files only: list + machine
    python scripts/gpu_requires.py installed                          # on the GPU machine, after install

`extract` (run by scripts/gpu_wheels.sh after the download) reads each pinned wheel's METADATA and writes
scripts/gpu_wheels.requires.txt, so that `check` (and tests/test_gpu_check_script.py) can tell without a
download whether every requirement of every listed wheel is met by a wheel of the list or by a package of
the GPU machine (scripts/gpu_machine_packages.txt; its versions are checked where the notes give one).
`installed` (run by scripts/gpu_check.sh) checks the same against what is importable on the machine,
versions included, and prints one line per unmet requirement (informational: the tests decide).

Standard library + `packaging` only (both there on the GPU machine).
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

SCRIPTS = Path(__file__).resolve().parent
WHEELS_LIST = SCRIPTS / "gpu_wheels.txt"
REQUIRES = SCRIPTS / "gpu_wheels.requires.txt"
MACHINE = SCRIPTS / "gpu_machine_packages.txt"
BUILD_ONLY = "# build-only"


def read_pins(path: Path = WHEELS_LIST) -> list[tuple[str, str, bool]]:
    """(canonical name, version, build_only) per `name==version` line of the wheel list."""
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one ==version pin a line
        if spec.operator != "==":
            raise ValueError(f"{path.name}: {raw!r} is not pinned with ==")
        pins.append((canonicalize_name(req.name), spec.version, BUILD_ONLY in raw))
    return pins


def wheel_requires(wheel: Path) -> list[str]:
    """Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [
            n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1
        ]
        message = email.parser.Parser().parsestr(archive.read(meta).decode())
    return message.get_all("Requires-Dist") or []


def find_wheel(folder: Path, name: str, version: str) -> Path:
    for wheel in sorted(folder.glob("*.whl")):
        wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        if canonicalize_name(wheel_name) == name and wheel_version == Version(version):
            return wheel
    raise FileNotFoundError(f"no wheel of {name}=={version} in {folder}")


def extract(folder: Path, pins: list[tuple[str, str, bool]]) -> str:
    """The requires file: per pinned wheel a `# file size` line, then `name==version: requirement` lines."""
    lines = [
        "# Requires-Dist of each wheel of scripts/gpu_wheels.txt, read from the wheels' METADATA by",
        "# scripts/gpu_requires.py extract (run by scripts/gpu_wheels.sh). Generated: do not edit.",
    ]
    for name, version, _ in pins:
        wheel = find_wheel(folder, name, version)
        lines.append(f"# {wheel.name} {wheel.stat().st_size} bytes")
        lines += [f"{name}=={version}: {req}" for req in wheel_requires(wheel)]
    return "\n".join(lines) + "\n"


def read_requires(path: Path = REQUIRES) -> dict[tuple[str, str], list[str]]:
    """{(name, version): [requirement strings]} of the requires file (every pinned wheel has an entry)."""
    out: dict[tuple[str, str], list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and line.endswith(" bytes"):
            name, version, _, _ = parse_wheel_filename(line.split()[1])
            out.setdefault((canonicalize_name(name), str(version)), [])
        elif line and not line.startswith("#"):
            pin, req = line.split(": ", 1)
            name, version = pin.split("==")
            out.setdefault((name, version), []).append(req)
    return out


def read_machine(path: Path = MACHINE) -> dict[str, str | None]:
    """{canonical name: version or None (not given)} of the GPU machine's package list."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version or None
    return out


def machine_environment(python_full_version: str = "3.12.3") -> dict[str, str]:
    """Marker environment of the GPU machine: CPython 3.12 on Linux x86_64, no extra."""
    major_minor = ".".join(python_full_version.split(".")[:2])
    return {
        "implementation_name": "cpython",
        "implementation_version": python_full_version,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python_full_version,
        "python_version": major_minor,
        "sys_platform": "linux",
        "extra": "",
    }


def applies(req: Requirement, env: dict[str, str]) -> bool:
    """Whether a requirement is needed: not behind an extra, and its marker holds in `env`."""
    return req.marker is None or req.marker.evaluate(env)


def unmet(
    requires: dict[tuple[str, str], list[str]],
    machine: dict[str, str | None],
    env: dict[str, str],
) -> tuple[list[str], list[str]]:
    """(problems, unverified) of every applicable requirement of every listed wheel.

    A requirement is met by a listed wheel (its pinned version in the specifier) or by a machine package
    (its version in the specifier where the list gives one; else counted as unverified, not a problem).
    """
    listed = {name: version for name, version in requires}
    problems, unverified = [], []
    for (name, version), reqs in requires.items():
        for text in reqs:
            req = Requirement(text)
            if not applies(req, env):
                continue
            dep = canonicalize_name(req.name)
            where = f"{name}=={version} needs {text}"
            if dep in listed:
                if not req.specifier.contains(listed[dep], prereleases=True):
                    problems.append(f"{where}: the list pins {dep}=={listed[dep]}")
            elif dep in machine:
                have = machine[dep]
                if have is None:
                    if str(req.specifier):
                        unverified.append(f"{where}: the machine has {dep}, version not recorded")
                elif not req.specifier.contains(have, prereleases=True):
                    problems.append(f"{where}: the machine has {dep}=={have}")
            else:
                problems.append(f"{where}: neither listed nor on the machine")
    return problems, unverified


def installed_problems(pins: list[tuple[str, str, bool]]) -> list[str]:
    """Unmet requirements of the pinned runtime wheels against what this interpreter can import."""
    env = default_environment() | {"extra": ""}
    problems = []
    for name, version, build_only in pins:
        if build_only:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed")
            continue
        if dist.version != version:
            problems.append(f"{name}: {dist.version} installed, the list pins {version}")
        for text in dist.requires or []:
            req = Requirement(text)
            if not applies(req, env):
                continue
            try:
                have = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                problems.append(f"{name} needs {text}: not installed")
                continue
            if not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {text}: {have} installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_extract = sub.add_parser("extract", help="write the requires file from downloaded wheels")
    p_extract.add_argument("wheels_dir", type=Path)
    p_extract.add_argument("--out", type=Path, default=REQUIRES)
    sub.add_parser("check", help="check the list against the requires file and the machine list")
    sub.add_parser("installed", help="check the installed wheels' requirements on this machine")
    args = parser.parse_args(argv)
    pins = read_pins()
    if args.command == "extract":
        args.out.write_text(extract(args.wheels_dir, pins))
        print(f"wrote {args.out}")
        return 0
    if args.command == "check":
        problems, unverified = unmet(read_requires(), read_machine(), machine_environment())
        for line in unverified:
            print(f"unverified: {line}")
    else:
        problems = installed_problems(pins)
    for line in problems:
        print(f"UNMET: {line}")
    print(f"{len(problems)} unmet requirement(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
