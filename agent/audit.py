"""The audit log: append-only JSON lines, each carrying the previous line's hash.

Entry ``seq`` n contains ``prev``, the SHA-256 of line n-1 exactly as written
(a run of 64 zeros for the first entry). Editing, removing or reordering any
line breaks the chain at that line, and :meth:`AuditLog.verify` reports
where. Writers hold an exclusive ``flock`` on the file while they append, so
the command line and the daemon can share one log.

The log of a state directory is also keyed: each line ends with ``mac``, the
HMAC-SHA256 of the line's text before that field, under the 32-byte key in
``keys/audit.key`` (mode 0600, created with the first keyed entry). Without
the key, a rewritten log cannot carry valid MACs, even with every hash
recomputed. Lines written before the key existed have no ``mac`` and are
checked by their hashes alone; after the first keyed line, every line must
be keyed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import keyfile
from agent.errors import LetheError
from agent.journal import dumps, now

FILE_NAME = "audit.log"
KEY_FILE = "keys/audit.key"
GENESIS = "0" * 64
#: The MAC field that ends a keyed line; the MAC covers the text before it.
_MAC_FIELD = re.compile(rb',"mac":"([0-9a-f]{64})"\}$')


class AuditChainBroken(LetheError):
    """The audit log was edited, truncated or reordered."""


class AuditKeyError(LetheError):
    """The audit key is unreadable, has unsafe permissions or the wrong size."""


@dataclass(frozen=True)
class Position:
    """The position of an entry in the log: its sequence number and line hash."""

    seq: int
    hash: str


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """The hash-chained log in the state directory, keyed when ``key_path`` is set."""

    def __init__(self, path: Path, key_path: Path | None = None) -> None:
        self.path = path
        self.key_path = key_path
        self._cached_key: bytes | None = None

    @classmethod
    def open(cls, state_dir: Path) -> AuditLog:
        return cls(state_dir / FILE_NAME, state_dir / KEY_FILE)

    def _key(self, create: bool) -> bytes | None:
        """Return the audit key, creating it when ``create`` is set; None without one."""
        if self.key_path is None:
            return None
        if self._cached_key is None:
            if create:
                self._cached_key = _load_or_create_key(self.key_path)
            elif self.key_path.exists():
                self._cached_key = _read_key(self.key_path)
        return self._cached_key

    def append(self, kind: str, **fields: Any) -> Position:
        """Append one entry and return its position."""
        with self.writer() as writer:
            return writer.append(kind, **fields)

    @contextlib.contextmanager
    def writer(self) -> Iterator[_Writer]:
        """Hold the log locked so a caller can learn the next position first.

        A certificate names the audit position of its own entry, so it is
        built while the lock is held and appended before the lock is released.
        """
        key = self._key(create=True)
        descriptor = os.open(
            self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield _Writer(descriptor, *self._tail(descriptor), key=key)
        finally:
            os.close(descriptor)

    @staticmethod
    def _tail(descriptor: int) -> tuple[int, str]:
        """Return the next sequence number and the hash of the last line."""
        size = os.fstat(descriptor).st_size
        if size == 0:
            return 0, GENESIS
        block = 4096
        data = b""
        offset = size
        while offset > 0:
            step = min(block, offset)
            offset -= step
            data = os.pread(descriptor, step, offset) + data
            lines = data.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or offset == 0:
                last = lines[-1]
                entry = json.loads(last)
                return entry["seq"] + 1, line_hash(last)
        raise AuditChainBroken("the audit log is empty but has a size")

    def entries(self) -> Iterator[tuple[dict[str, Any], str]]:
        """Yield each entry with the hash of its line."""
        for _number, line, entry in self._lines():
            yield entry, line_hash(line)

    def _lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """Yield each line's number, its bytes without the newline, and its entry."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as stream:
            for number, line in enumerate(stream, start=1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise AuditChainBroken(
                        f"{self.path}:{number}: not a JSON entry ({error.msg})"
                    ) from error
                yield number, line.rstrip(b"\n"), entry

    def verify(self, up_to: int | None = None) -> Position | None:
        """Check the chain and the MACs from the first entry, up to seq ``up_to`` inclusive.

        Returns the position of the last entry checked; raises
        AuditChainBroken naming the first line that does not fit.
        """
        key = self._key(create=False)
        previous = GENESIS
        last: Position | None = None
        keyed = False
        for number, line, entry in self._lines():
            keyed = self._check_mac(number, line, key, keyed)
            digest = line_hash(line)
            if entry.get("seq") != number - 1:
                raise AuditChainBroken(
                    f"{self.path}:{number}: expected seq {number - 1}, found {entry.get('seq')}"
                )
            if entry.get("prev") != previous:
                raise AuditChainBroken(
                    f"{self.path}:{number}: the previous entry's hash does not match; "
                    "the log was edited or lines were removed"
                )
            previous = digest
            last = Position(entry["seq"], digest)
            if up_to is not None and entry["seq"] == up_to:
                return last
        if key is not None and last is not None and not keyed:
            raise AuditChainBroken(
                f"{self.path}: the audit key {self.key_path} exists but no entry "
                "carries an HMAC; the keyed entries were removed or rewritten"
            )
        if up_to is not None:
            end = "is empty" if last is None else f"ends at entry {last.seq}"
            raise AuditChainBroken(
                f"{self.path} {end}, before entry {up_to}; lines were removed "
                "from its end"
            )
        return last

    def _check_mac(
        self, number: int, line: bytes, key: bytes | None, keyed_before: bool
    ) -> bool:
        """Check one line's MAC; return whether this line or an earlier one is keyed."""
        match = _MAC_FIELD.search(line)
        if match is None:
            if keyed_before:
                raise AuditChainBroken(
                    f"{self.path}:{number}: the entry has no HMAC although earlier "
                    "entries have one; it was added without the audit key"
                )
            return False
        if key is None:
            raise AuditChainBroken(
                f"{self.path}:{number}: the entry carries an HMAC, but the audit key "
                f"{self.key_path} is missing; restore it from the backup of the "
                "state directory"
            )
        expected = entry_mac(key, line[: match.start()] + b"}")
        if not hmac.compare_digest(match.group(1).decode(), expected):
            raise AuditChainBroken(
                f"{self.path}:{number}: the entry's HMAC does not match; the entry "
                "was edited, or written with another audit key"
            )
        return True

    def has_job(self, job_id: Any) -> bool:
        """Tell whether any entry names ``job_id``, so a log from another state directory shows."""
        return any(entry.get("job_id") == job_id for entry, _ in self.entries())

    def find(self, seq: int) -> tuple[dict[str, Any], str] | None:
        for entry, digest in self.entries():
            if entry.get("seq") == seq:
                return entry, digest
        return None

    def last_of_kind(self, kind: str) -> dict[str, Any] | None:
        last = None
        for entry, _digest in self.entries():
            if entry.get("kind") == kind:
                last = entry
        return last


class _Writer:
    def __init__(
        self, descriptor: int, next_seq: int, previous: str, key: bytes | None
    ) -> None:
        self._descriptor = descriptor
        self.next_seq = next_seq
        self._previous = previous
        self._key = key

    def append(self, kind: str, **fields: Any) -> Position:
        entry = {
            "seq": self.next_seq,
            "time": now(),
            "kind": kind,
            "prev": self._previous,
            **fields,
        }
        line = dumps(entry).encode()
        if self._key is not None:
            # The canonical JSON ends with "}", so the field goes just before it.
            mac = entry_mac(self._key, line)
            line = line[:-1] + f',"mac":"{mac}"}}'.encode()
        os.write(self._descriptor, line + b"\n")
        os.fsync(self._descriptor)
        position = Position(self.next_seq, line_hash(line))
        self.next_seq += 1
        self._previous = position.hash
        return position


def entry_mac(key: bytes, unkeyed_line: bytes) -> str:
    """Return the HMAC-SHA256 of an entry's line as written before its ``mac`` field."""
    return hmac.new(
        key, b"lethe audit entry\0" + unkeyed_line, hashlib.sha256
    ).hexdigest()


def _load_or_create_key(path: Path) -> bytes:
    return keyfile.load_or_create(path, "audit key", AuditKeyError)[0]


def _read_key(path: Path) -> bytes:
    return keyfile.read(path, "audit key", AuditKeyError)
