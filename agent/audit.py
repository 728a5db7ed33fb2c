"""The audit log: append-only JSON lines, each carrying the previous line's hash.

Entry ``seq`` n contains ``prev``, the SHA-256 of line n-1 exactly as written
(a run of 64 zeros for the first entry). Editing, removing or reordering any
line breaks the chain at that line, and :meth:`AuditLog.verify` reports
where. Writers hold an exclusive ``flock`` on the file while they append, so
the command line and the daemon can share one log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import LetheError
from agent.journal import dumps, now

FILE_NAME = "audit.log"
GENESIS = "0" * 64


class AuditChainBroken(LetheError):
    """The audit log was edited, truncated or reordered."""


@dataclass(frozen=True)
class Position:
    """The position of an entry in the log: its sequence number and line hash."""

    seq: int
    hash: str


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """The hash-chained log in the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> AuditLog:
        return cls(state_dir / FILE_NAME)

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
        descriptor = os.open(
            self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield _Writer(descriptor, *self._tail(descriptor))
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
                yield entry, line_hash(line)

    def verify(self, up_to: int | None = None) -> Position | None:
        """Check the chain from the first entry, up to seq ``up_to`` inclusive.

        Returns the position of the last entry checked; raises
        AuditChainBroken naming the first line that does not fit.
        """
        previous = GENESIS
        last: Position | None = None
        for number, (entry, digest) in enumerate(self.entries(), start=1):
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
        if up_to is not None:
            raise AuditChainBroken(
                f"{self.path}: entry {up_to} is missing; the log was truncated"
            )
        return last

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
    def __init__(self, descriptor: int, next_seq: int, previous: str) -> None:
        self._descriptor = descriptor
        self.next_seq = next_seq
        self._previous = previous

    def append(self, kind: str, **fields: Any) -> Position:
        entry = {
            "seq": self.next_seq,
            "time": now(),
            "kind": kind,
            "prev": self._previous,
            **fields,
        }
        line = dumps(entry).encode()
        os.write(self._descriptor, line + b"\n")
        os.fsync(self._descriptor)
        position = Position(self.next_seq, line_hash(line))
        self.next_seq += 1
        self._previous = position.hash
        return position
