"""Job locks, so that a job whose process died shows as interrupted.

The process that runs a job holds an exclusive ``flock`` on
``locks/JOB.lock`` in the state directory until the engine closes. The
kernel drops the lock when the process ends for any reason, SIGKILL
included, so a job the journal still calls running while nobody
holds its lock was interrupted. The file holds the owner's pid, which is
only shown in messages: a reused pid cannot make a dead job look alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import UsageError
from agent.log import get_logger

LOCK_DIR = "locks"


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
