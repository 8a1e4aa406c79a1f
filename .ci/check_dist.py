"""Check the built sdist and wheel hold what a release needs (run by .ci/release).

    python .ci/check_dist.py DIST_DIR

- both artifacts carry the version written in pyproject.toml, and metadata with
  ``License-Expression: MIT``, ``License-File: LICENSE``, valid classifiers and the
  project URLs;
- the sdist holds every tracked file of the package, the tests, the docs and the
  examples, plus LICENSE, the changelog and the security policy, and no build debris;
- the wheel holds every tracked file of the package (modules, Lua scripts, dashboard
  assets, ``py.typed``) and the license, and nothing else.

Prints the files that matter in each artifact and exits 1 naming every problem.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Tracked files under these go into the sdist; those under fanout/ into the wheel too.
SDIST_TREES = ("fanout/", "tests/", "docs/", "examples/")
# And these files, tracked or not yet.
SDIST_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md", "pyproject.toml", "dev")
DEBRIS = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.venv[^/]*|bench/results)(/|$)|\.py[cod]$")
URLS = ("Documentation", "Changelog", "Issues", "Source")


def tracked() -> list[str]:
    """The repository's files as git knows them (a checkout without git: the tree)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        return sorted(p for p in out.split("\0") if p and (ROOT / p).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                      if p.is_file() and not DEBRIS.search(str(p.relative_to(ROOT))))


def written_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    if not m:
        raise SystemExit("check_dist: pyproject.toml has no static version line")
    return m.group(1)


def check_metadata(where: str, text: str, problems: list[str]) -> None:
    meta = email.parser.Parser().parsestr(text)
    version = tuple(int(x) for x in meta["Metadata-Version"].split("."))
    if version < (2, 4):
        problems.append(f"{where}: Metadata-Version {meta['Metadata-Version']} (< 2.4, no License-File)")
    if meta["License-Expression"] != "MIT":
        problems.append(f"{where}: License-Expression is {meta['License-Expression']!r}, not 'MIT'")
    if meta.get_all("License-File") != ["LICENSE"]:
        problems.append(f"{where}: License-File is {meta.get_all('License-File')}, not ['LICENSE']")
    classifiers = meta.get_all("Classifier") or []
    try:
        from trove_classifiers import classifiers as known
    except ImportError:
        problems.append("check_dist: trove-classifiers is not installed (the dev extra has it)")
    else:
        problems += [f"{where}: unknown classifier {c!r}" for c in classifiers if c not in known]
    pythons = sorted(c.rsplit(" ", 1)[1] for c in classifiers
                     if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    if not pythons:
        problems.append(f"{where}: no 'Programming Language :: Python :: 3.x' classifier")
    urls = {u.split(",", 1)[0].strip() for u in meta.get_all("Project-URL") or []}
    problems += [f"{where}: no {name} project URL" for name in URLS if name not in urls]


def main(dist: Path) -> int:
    problems: list[str] = []
    version = written_version()
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"check_dist: expected one sdist and one wheel in {dist}, found "
              f"{[p.name for p in sdists + wheels]}", file=sys.stderr)
        return 1
    sdist, wheel = sdists[0], wheels[0]
    for art in (sdist, wheel):
        if f"celery_fanout-{version}" not in art.name:
            problems.append(f"{art.name}: not version {version} (pyproject.toml)")
    files = tracked()
    license_text = (ROOT / "LICENSE").read_bytes()

    # -- the sdist ----------------------------------------------------------------------
    top = f"celery_fanout-{version}/"
    with tarfile.open(sdist) as tar:
        names = {m.name[len(top):] for m in tar.getmembers() if m.isfile() and m.name.startswith(top)}
        pkg_info = tar.extractfile(top + "PKG-INFO")
        check_metadata(f"{sdist.name} PKG-INFO", pkg_info.read().decode() if pkg_info else "",
                       problems)
        lic = tar.extractfile(top + "LICENSE") if "LICENSE" in names else None
        if lic is None or lic.read() != license_text:
            problems.append(f"{sdist.name}: LICENSE missing or not the repository's")
    want = sorted({f for f in files if f.startswith(SDIST_TREES)} | set(SDIST_FILES))
    problems += [f"{sdist.name}: missing {f} (MANIFEST.in)" for f in want if f not in names]
    problems += [f"{sdist.name}: build debris {n}" for n in sorted(names) if DEBRIS.search(n)]

    # -- the wheel ----------------------------------------------------------------------
    info = f"celery_fanout-{version}.dist-info/"
    with zipfile.ZipFile(wheel) as zf:
        wnames = set(zf.namelist())
        check_metadata(f"{wheel.name} METADATA", zf.read(info + "METADATA").decode(), problems)
        if info + "licenses/LICENSE" not in wnames or zf.read(info + "licenses/LICENSE") != license_text:
            problems.append(f"{wheel.name}: {info}licenses/LICENSE missing or not the repository's")
        entry = zf.read(info + "entry_points.txt").decode() if info + "entry_points.txt" in wnames else ""
        if not re.search(r"^fanout\s*=\s*fanout\._cli:main$", entry, re.M):
            problems.append(f"{wheel.name}: no console script fanout = fanout._cli:main")
    problems += [f"{wheel.name}: missing {f}" for f in files
                 if f.startswith("fanout/") and f not in wnames]
    problems += [f"{wheel.name}: holds {n} (only the package and its metadata belong there)"
                 for n in sorted(wnames) if not n.startswith(("fanout/", info))]

    # -- what a reader of the CI log wants to see -----------------------------------------
    def kinds(names: set[str]) -> str:
        counts = {label: sum(1 for x in names if re.search(pattern, x)) for label, pattern in (
            ("LICENSE", r"(^|/)LICENSE$"),
            ("Lua scripts", r"^fanout/_redis/lua/.+[.]lua$"),
            ("dashboard assets", r"^fanout/_dashboard/(templates|static)/"),
            ("py.typed", r"^fanout/py[.]typed$"),
            ("test modules", r"^tests/.+[.]py$"),
            ("unit test modules", r"^tests/unit/.+[.]py$"),
            ("doc pages", r"^docs/.+[.]md$"),
        )}
        return ", ".join(f"{n} {label}" for label, n in counts.items()) + f"; {len(names)} files"

    print(f"check_dist: {sdist.name}: {kinds(names)}")
    print(f"check_dist: {wheel.name}: {kinds(wnames)}")
    if problems:
        print("\n".join(f"check_dist: {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python .ci/check_dist.py DIST_DIR")
    raise SystemExit(main(Path(sys.argv[1])))
