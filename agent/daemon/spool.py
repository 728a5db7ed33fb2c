"""The spool: plans handed to the daemon as files, moved between folders by rename.

Layout under the spool directory::

    incoming/   plans written by ``lethe submit`` (temp file, fsync, rename)
    claimed/    plans the daemon took by renaming them out of incoming/
    done/       plans whose job finished, with NAME.result.json beside them
    rejected/   plans that were not run, with NAME.reason beside them

Every move is a ``rename`` inside one filesystem, so a plan is in exactly one
folder at any instant, and a crash never leaves half a plan behind. Names
start with a UTC time stamp, so sorting them gives the submission order.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.daemon import DaemonConfig
from agent.errors import ConfigError, LetheError, PlanFileInvalid, UsageError
from agent.plan import SavedPlan, read_plan_file
from agent.state import state_dir as resolve_state_dir

FOLDERS = ("incoming", "claimed", "done", "rejected")


class InvalidPlan(LetheError):
    """A spooled file is not a plan the daemon may run."""


def spool_path(daemon: DaemonConfig, state_dir: Path) -> Path:
    return Path(daemon.spool_dir) if daemon.spool_dir else state_dir / "spool"


class Spool:
    """The four spool folders under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.claimed = root / "claimed"
        self.done = root / "done"
        self.rejected = root / "rejected"

    @classmethod
    def for_config(cls, config: Any, state_dir: Path | None = None) -> Spool:
        daemon = config.sections.get("daemon") or DaemonConfig()
        return cls(spool_path(daemon, state_dir or resolve_state_dir(config)))

    def create(self) -> Spool:
        for name in FOLDERS:
            (self.root / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    def submit(self, source: Path) -> Path:
        """Copy a plan file into incoming/ atomically and return its spool path."""
        self.create()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{secrets.token_hex(4)}.json"
        temporary = self.incoming / f".{name}.tmp"
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            while chunk := reader.read(1 << 20):
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        os.rename(temporary, self.incoming / name)
        _fsync_directory(self.incoming)
        return self.incoming / name

    def waiting(self) -> list[Path]:
        """Return the plans in incoming/, oldest first; temp files are skipped."""
        return sorted(
            path
            for path in self.incoming.glob("*.json")
            if not path.name.startswith(".")
        )

    def claim(self, path: Path) -> Path | None:
        """Move a plan from incoming/ to claimed/; None if it is gone already."""
        destination = self.claimed / path.name
        try:
            os.rename(path, destination)
        except FileNotFoundError:
            return None
        _fsync_directory(self.claimed)
        return destination

    def claimed_plans(self) -> list[Path]:
        return sorted(self.claimed.glob("*.json"))

    def reject(self, path: Path, reason: str) -> Path:
        """Move a plan to rejected/ and write the reason beside it."""
        destination = self.rejected / path.name
        os.rename(path, destination)
        _write_best_effort(self.rejected / f"{path.name}.reason", reason + "\n")
        _fsync_directory(self.rejected)
        return destination

    def finish(self, path: Path, result: dict[str, Any]) -> Path:
        """Move a claimed plan to done/ and write the job's result beside it."""
        destination = self.done / path.name
        os.rename(path, destination)
        _write_best_effort(
            self.done / f"{path.stem}.result.json", json.dumps(result, indent=2) + "\n"
        )
        _fsync_directory(self.done)
        return destination

    def counts(self) -> dict[str, int]:
        return {
            "incoming": len(self.waiting()) if self.incoming.is_dir() else 0,
            "claimed": len(self.claimed_plans()) if self.claimed.is_dir() else 0,
            "rejected": _count(self.rejected, "*.json"),
            "done": _count(self.done, "*[0-9a-f].json"),
        }


@dataclass(frozen=True)
class CheckedPlan:
    """A plan file that passed every check before anything runs."""

    path: Path
    saved: SavedPlan


def check_plan(path: Path, daemon: DaemonConfig) -> CheckedPlan:
    """Check that a file is a plan, that its hash matches, and that it is allowed.

    Raises InvalidPlan with the reason; nothing is discovered or destroyed.
    """
    try:
        saved = read_plan_file(str(path))
    except PlanFileInvalid as error:
        raise InvalidPlan(f"plan hash mismatch: {error}") from error
    except (UsageError, ConfigError) as error:
        raise InvalidPlan(f"not a valid plan: {error}") from error
    refused = [target.url for target in saved.targets if not daemon.allows(target.url)]
    if refused:
        allowed = ", ".join(daemon.allowed_targets) or "none"
        raise InvalidPlan(
            f"target not allowed by daemon.allowed_targets: {', '.join(refused)} "
            f"(allowed: {allowed})"
        )
    return CheckedPlan(path, saved)


def _count(folder: Path, pattern: str) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for _ in folder.glob(pattern))


def _write_best_effort(path: Path, text: str) -> None:
    """Write a note beside a moved plan; a full disk loses the note, not the move."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        pass


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
