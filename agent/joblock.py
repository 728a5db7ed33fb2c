"""Job and target locks, so that a dead job shows and two jobs never share a target.

The process that runs a job holds an exclusive ``flock`` on
``locks/JOB.lock`` in the state directory until the engine closes. The
kernel drops the lock when the process ends for any reason, SIGKILL
included, so a job the journal still calls running while nobody
holds its lock was interrupted. The file holds the owner's pid, which is
only shown in messages: a reused pid cannot make a dead job look alive.

A job that may destroy data also locks ``locks/JOB.targets``, which lists
its canonical target URLs. A new job reads every such file that a live
process holds, under the exclusive lock of ``locks/targets.lock``, and is
rejected when one of its targets is, contains or lies within a target there.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

from agent.errors import JournalError, UsageError
from agent.log import get_logger
from agent.targets import targets_overlap

LOCK_DIR = "locks"
TARGETS_SUFFIX = ".targets"
TARGETS_MUTEX = "targets.lock"


def lock_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / LOCK_DIR / f"{job_id}.lock"


class JobLock:
    """The lock of a running job; :meth:`release` removes the lock file."""

    def __init__(self, path: Path, descriptor: int | None) -> None:
        self.path = path
        self._descriptor = descriptor

    @classmethod
    def acquire(cls, state_dir: Path, job_id: str) -> JobLock:
        """Take the lock of ``job_id``, or raise UsageError when a live process has it."""
        path = lock_path(state_dir, job_id)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            # The job runs on, and the journal reports the state directory's
            # problem at its next write. NOTE: until then lethe status shows
            # the job as interrupted, because no lock file exists.
            get_logger(__name__).warning(
                "job lock not created", path=str(path), error=error.strerror
            )
            return cls(path, None)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(descriptor)
            os.close(descriptor)
            raise UsageError(
                f"job {job_id} is running in another process{owner}; wait for it to "
                "finish, or stop it (SIGTERM) before resuming it"
            ) from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid only appears in messages, and the lock is taken
        return cls(path, descriptor)

    def release(self) -> None:
        if self._descriptor is None:
            return
        # Unlink before unlocking, so a new owner never locks a file that
        # is about to be removed.
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None


def owner_alive(state_dir: Path, job_id: str) -> bool:
    """Tell whether a live process holds the lock of ``job_id``."""
    try:
        descriptor = os.open(lock_path(state_dir, job_id), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def _read_pid(descriptor: int) -> str:
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return f" (pid {text})" if text.isdigit() else ""


class TargetLock:
    """The targets of a running job; :meth:`release` removes the lock file."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, state_dir: Path, job_id: str, urls: Sequence[str]) -> TargetLock:
        """Lock ``urls`` for ``job_id``, or raise UsageError naming the job that has one.

        Raises JournalError when the lock directory cannot be written, because
        a job that cannot lock its targets could run over another job's.
        """
        directory = state_dir / LOCK_DIR
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            mutex = os.open(
                directory / TARGETS_MUTEX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as error:
            raise _lock_error(directory, error) from error
        try:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            for path in sorted(directory.glob("*" + TARGETS_SUFFIX)):
                _check_other_job(path, job_id, urls)
            path = directory / f"{job_id}{TARGETS_SUFFIX}"
            record = {"job_id": job_id, "pid": os.getpid(), "targets": list(urls)}
            return cls(path, _write_locked(path, json.dumps(record).encode()))
        finally:
            os.close(mutex)

    def release(self) -> None:
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None


def _write_locked(path: Path, data: bytes) -> int:
    """Create ``path`` holding ``data``, locked exclusively; return its descriptor."""
    try:
        descriptor = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
    except OSError as error:
        raise _lock_error(path.parent, error) from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if os.write(descriptor, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as error:
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise _lock_error(path.parent, error) from error
    return descriptor


def _lock_error(directory: Path, error: OSError) -> JournalError:
    reason = (
        "its filesystem is full; free space there"
        if error.errno == errno.ENOSPC
        else f"{error.strerror}; make the state directory writable for this user"
    )
    return JournalError(f"cannot lock the targets in {directory}: {reason}")


def _check_other_job(path: Path, job_id: str, urls: Sequence[str]) -> None:
    """Raise UsageError when a live job's lock file names a target overlapping ``urls``.

    A file that no live process locks is left by a job that ended without
    releasing it (SIGKILL), and is removed.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_record(descriptor)
        else:
            path.unlink(missing_ok=True)
            return
    finally:
        os.close(descriptor)
    other = record.get("job_id")
    if other == job_id:
        return
    for theirs in record.get("targets", ()):
        for mine in urls:
            if targets_overlap(mine, theirs):
                raise UsageError(
                    f"target {mine} overlaps target {theirs} of job {other}, which "
                    f"is running in another process (pid {record.get('pid')}); wait "
                    "for that job to finish, or stop it (SIGTERM) and resume it later"
                )


def _read_record(descriptor: int) -> dict:
    data = b""
    while chunk := os.read(descriptor, 65536):
        data += chunk
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
