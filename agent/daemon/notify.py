"""The systemd notify protocol (sd_notify), spoken over the socket directly.

systemd passes ``NOTIFY_SOCKET``: a path of a Unix datagram socket, or an
abstract socket name starting with ``@``. Each message is one datagram of
``KEY=VALUE`` lines (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``,
``STOPPING=1``). The protocol is this small, and the Python packages that
wrap it (sdnotify, systemd-python) are unmaintained or need libsystemd
headers to build, so Lethe sends the datagrams itself.
"""

from __future__ import annotations

import os
import socket

from agent.log import get_logger

log = get_logger(__name__)


class Notifier:
    """Sends notify messages to systemd; does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | bytes | None = _socket_address(address)
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
            )
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> None:
        """Send one datagram of ``KEY=VALUE`` lines, such as ``READY=1``."""
        if self._socket is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode("utf-8"), self._address)
        except OSError as error:
            # Repeats are counted, and only the first few are logged.
            self._failures += 1
            if self._failures <= 3:
                log.warning(
                    "systemd notify failed",
                    error=str(error),
                    failures=self._failures,
                )

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def stopping(self, status: str) -> None:
        self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str | None) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + value[1:].encode("utf-8")
    return value


def watchdog_interval() -> float | None:
    """Return how often to ping the watchdog, in seconds, or None when it is off.

    systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, which must be this
    process) when the unit has ``WatchdogSec=``. Pinging at half the timeout
    follows the sd_watchdog_enabled(3) advice.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        microseconds = int(usec)
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 2_000_000
