"""A rig that runs the real ``lethe daemon`` as a subprocess.

Targets live on a tmpfs that the test mounts, so the files plugin never
touches the machine's own filesystem (on ext4 it would also checkpoint the
filesystem's journal). Each test gets its own config, state directory,
spool and notify socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_root, require_tool

LETHE = [sys.executable, "-m", "agent.cli"]


def run_lethe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LETHE, *args], capture_output=True, text=True, timeout=120)


def mount_tmpfs(mount_point: Path, size: str) -> None:
    require_root()
    require_tool("mount")
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size},mode=0755",
            "tmpfs",
            str(mount_point),
        ],
        check=True,
    )


def unmount(mount_point: Path) -> None:
    result = subprocess.run(["umount", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def make_tree(root: Path, count: int, dirs: int = 20) -> dict[Path, str]:
    """Write ``count`` small files in ``dirs`` subfolders; return their SHA-256."""
    hashes = {}
    for index in range(count):
        folder = root / f"d{index % dirs:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"customer-{index:05d}.csv"
        data = f"name,id\ncustomer {index},ID-{index:08d}\n".encode() * 4
        path.write_bytes(data)
        hashes[path] = hashlib.sha256(data).hexdigest()
    return hashes


def item_count(tree: dict[Path, str]) -> int:
    """Return how many items the files plugin plans: files, folders and the root."""
    return len(tree) + len({path.parent for path in tree}) + 1


def file_hashes(paths: list[Path]) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.socket.bind(bound)
        self.socket.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def wait_for(
        self, key: str, value: str | None = None, timeout: float = 30, since: int = 0
    ) -> dict:
        """Wait for a message with ``key``, looking only at messages from ``since`` on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.drain()[since:]:
                if key in message and (value is None or message[key] == value):
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no notify message with {key}={value} in {self.messages}")

    def close(self) -> None:
        self.socket.close()


class DaemonRig:
    """A config, state directory, spool and target tree for one daemon."""

    def __init__(self, root: Path, filesystem: Path) -> None:
        self.root = root
        self.filesystem = filesystem
        self.target = filesystem / "target"
        self.keep = filesystem / "keep"
        self.target.mkdir()
        self.keep.mkdir()
        self.state = root / "state"
        self.config = root / "lethe.yaml"
        self.log_path = root / "daemon.log"
        self.notify = NotifySocket(str(root / "notify.sock"))
        self.process: subprocess.Popen[bytes] | None = None
        # Offsets where the latest daemon's notify messages and log lines begin, so a
        # wait after a restart cannot match what the previous daemon sent.
        self.notify_mark = 0
        self.log_mark = 0
        self.write_config()

    def write_config(self, **daemon: Any) -> None:
        section = {
            "poll_seconds": 0.1,
            "max_jobs": 2,
            "allowed_targets": [str(self.target)],
        }
        section.update(daemon)
        document = {
            "state_dir": str(self.state),
            "settings": {"scan_device": False},
            "daemon": section,
        }
        self.config.write_text(yaml.safe_dump(document), encoding="utf-8")

    def start(self, **environment: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.address, **environment)
        env.pop("LETHE_STATE_DIR", None)
        self.notify_mark = len(self.notify.drain())
        self.log_mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*LETHE, "daemon", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env=env,
            )
        return self.process

    def wait_ready(self, timeout: float = 30) -> dict:
        return self.notify.wait_for("READY", "1", timeout, since=self.notify_mark)

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def plan(self, *targets: Path, name: str = "plan.json") -> Path:
        path = self.root / name
        result = run_lethe(
            "plan",
            "-c",
            str(self.config),
            *map(str, targets),
            "-o",
            str(path),
            "--json",
        )
        assert result.returncode in (0, 1), result.stderr
        return path

    def submit(self, plan: Path) -> subprocess.CompletedProcess[str]:
        return run_lethe("submit", "-c", str(self.config), str(plan))

    def spool_write(self, name: str, data: bytes) -> Path:
        """Drop a file into incoming/ the way submit does (temp file and rename)."""
        incoming = self.state / "spool" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        temporary = incoming / f".{name}.tmp"
        temporary.write_bytes(data)
        os.rename(temporary, incoming / name)
        return incoming / name

    def status(self) -> dict[str, Any]:
        result = run_lethe("status", "-c", str(self.config), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def events(self, latest_run: bool = False) -> list[dict[str, Any]]:
        """Return the log's JSON events, or only the latest daemon's."""
        events = []
        with open(self.log_path, "rb") as log:
            log.seek(self.log_mark if latest_run else 0)
            text = log.read().decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by kill -9
        return events

    def wait_for_event(
        self, event: str, timeout: float = 60, **fields: Any
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for entry in self.events(latest_run=True):
                if entry.get("event") == event and all(
                    entry.get(key) == value for key, value in fields.items()
                ):
                    return entry
            return None

        return wait_until(found, timeout, f"log event {event!r} {fields}")

    def spool_files(self, folder: str) -> list[Path]:
        path = self.state / "spool" / folder
        if not path.is_dir():
            return []
        return sorted(
            p for p in path.glob("*.json") if not p.name.endswith(".result.json")
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self.notify.close()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
