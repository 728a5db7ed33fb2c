"""Backup files that hold copies of the selected data: dumps, archives, copies.

The config declares where backups live (directories and file-name
patterns). Each backup file is read through and searched for the
fingerprints taken from the selected items: tar archives member by member
(plain, gzip, bzip2 and xz, through :mod:`tarfile`), gzip files through
:mod:`gzip`, everything else as raw bytes, so SQL dumps, CSV exports and
rsync copies are covered. A backup matches when it contains a content window
of a selected item, or at least :data:`MIN_FIELD_HITS` distinct field values
of one item (a dump stores the same values in another layout).
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from plugins.errors import InvalidTarget
from plugins.scan import CHUNK, FingerprintScanner

log = structlog.get_logger(__name__).bind(plugin="files")

#: Keys of the ``backups`` target option.
OPTIONS = {"paths", "patterns", "purge"}
#: Distinct field values of one item that make a match without a content hit.
MIN_FIELD_HITS = 2
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class BackupConfig:
    """The ``backups`` target option: where backups are and whether to purge them."""

    paths: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ("*",)
    purge: bool = False

    @classmethod
    def from_option(cls, value: object, target: str) -> BackupConfig:
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidTarget(
                f"target {target}: option backups must be a mapping with keys "
                f"{', '.join(sorted(OPTIONS))}"
            )
        unknown = set(value) - OPTIONS
        if unknown:
            raise InvalidTarget(
                f"target {target}: unknown key(s) {', '.join(sorted(unknown))} under "
                f"backups; valid keys: {', '.join(sorted(OPTIONS))}"
            )
        paths = _strings(value.get("paths", []), "backups.paths", target)
        for path in paths:
            if not path.startswith("/"):
                raise InvalidTarget(
                    f"target {target}: backups.paths entry {path!r} must be absolute"
                )
        patterns = _strings(value.get("patterns", ["*"]), "backups.patterns", target)
        purge = value.get("purge", False)
        if not isinstance(purge, bool):
            raise InvalidTarget(f"target {target}: backups.purge must be true or false")
        return cls(tuple(paths), tuple(patterns), purge)


def _strings(value: object, key: str, target: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidTarget(f"target {target}: {key} must be a list of strings")
    if not all(isinstance(entry, str) and entry for entry in value):
        raise InvalidTarget(
            f"target {target}: {key} must be a list of non-empty strings"
        )
    return list(value)


@dataclass
class Selection:
    """Fingerprints of the selected items, split by kind, keyed by item."""

    content: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    fields: dict[str, tuple[bytes, ...]] = field(default_factory=dict)

    def add(
        self, owner: str, content: Sequence[bytes], fields: Sequence[bytes]
    ) -> None:
        if content:
            self.content[owner] = tuple(content)
        if fields:
            self.fields[owner] = tuple(fields)

    def __bool__(self) -> bool:
        return bool(self.content or self.fields)


@dataclass(frozen=True)
class Match:
    """A backup file that holds copies of selected items."""

    path: str
    owners: tuple[str, ...]
    members: tuple[str, ...]
    hits: int
    digests: tuple[str, ...]


def backup_files(config: BackupConfig, exclude: str) -> Iterator[str]:
    """Yield regular files under the declared paths whose names match a pattern.

    Files inside ``exclude`` (the target itself) are left to the target.
    Symbolic links are not followed.
    """
    for root in config.paths:
        if os.path.isfile(root) and not os.path.islink(root):
            yield root
            continue
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if path == exclude or path.startswith(exclude.rstrip("/") + "/"):
                    continue
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if any(fnmatch.fnmatchcase(name, p) for p in config.patterns):
                    yield path


class BackupScanner:
    """Search backup files for the fingerprints of a selection."""

    def __init__(self, selection: Selection) -> None:
        self._scanner = FingerprintScanner()
        for owner, windows in selection.content.items():
            self._scanner.add_all("content\0" + owner, windows)
        for owner, values in selection.fields.items():
            self._scanner.add_all("field\0" + owner, values)

    def scan(self, path: str) -> Match | None:
        """Return what ``path`` holds of the selection, or None when nothing."""
        owners: set[str] = set()
        field_hits: dict[str, set[str]] = {}
        members: list[str] = []
        digests: set[str] = set()
        hits = 0
        for member, chunks in _streams(path):
            found = False
            for hit in self._scanner.scan_chunks(chunks):
                kind, _, owner = hit.owner.partition("\0")
                hits += 1
                digests.add(hit.digest)
                if kind == "content":
                    owners.add(owner)
                    found = True
                else:
                    field_hits.setdefault(owner, set()).add(hit.digest)
                    if len(field_hits[owner]) >= MIN_FIELD_HITS:
                        owners.add(owner)
                        found = True
            if found and member:
                members.append(member)
        if not owners:
            return None
        return Match(
            path, tuple(sorted(owners)), tuple(members), hits, tuple(sorted(digests))
        )


def _streams(path: str) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Yield (member name, chunks) for each readable stream inside ``path``."""
    if tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name, _chunks(handle)
            return
        except (tarfile.TarError, OSError, EOFError, zlib.error):
            log.debug("tar read failed; scanning raw bytes", exc_info=True)
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as handle:
                yield "", _chunks(handle)
            return
        except (OSError, EOFError, zlib.error):
            log.debug("gzip read failed; scanning raw bytes", exc_info=True)
    with open(path, "rb") as handle:
        yield "", _chunks(handle)


def _chunks(handle) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def describe_match(match: Match, shown: int = 3) -> str:
    """Say in plain words which selected items a backup holds."""
    owners = ", ".join(match.owners[:shown])
    if len(match.owners) > shown:
        owners += f" and {len(match.owners) - shown} more"
    where = f" in member(s) {', '.join(match.members[:shown])}" if match.members else ""
    return f"holds data of {owners}{where} ({match.hits} fingerprint hit(s))"
