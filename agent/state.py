"""The state directory: journal, audit log, signing key and certificates."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config import Config

SYSTEM_STATE_DIR = "/var/lib/lethe"


def state_dir(config: Config, override: str | None = None) -> Path:
    """Return the state directory, creating it with mode 0700 when missing.

    The first of these wins: ``override`` (the command line), the
    ``LETHE_STATE_DIR`` environment variable, ``state_dir`` in the config,
    ``/var/lib/lethe`` as root, and ``$XDG_STATE_HOME/lethe`` (by default
    ``~/.local/state/lethe``) for other users.
    """
    chosen = override or os.environ.get("LETHE_STATE_DIR") or config.state_dir
    if chosen:
        path = Path(chosen).expanduser()
    elif os.geteuid() == 0:
        path = Path(SYSTEM_STATE_DIR)
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        path = Path(xdg) / "lethe"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path.resolve()
