"""Options and set-up shared by the verbs: config, state directory, targets."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agent import config as config_module
from agent import log
from agent.config import Config
from agent.errors import LetheError
from agent.registry import Registry
from agent.state import state_dir
from plugins.base import Target
from plugins.errors import PluginError


def parent_parser() -> argparse.ArgumentParser:
    """Options every verb accepts."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="configuration file (YAML)"
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory of the journal, audit log, signing key and certificates "
        "(default: $LETHE_STATE_DIR, state_dir in the config, /var/lib/lethe as root, "
        "$XDG_STATE_HOME/lethe otherwise)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default: INFO for JSON logs, WARNING on a terminal, "
        "where progress bars show the per-item progress)",
    )
    return parser


@dataclass
class Context:
    config: Config
    state_dir: Path
    console: Console


def load_context(args: argparse.Namespace) -> Context:
    """Configure logging, read the config and resolve the state directory."""
    log.configure(args.log_level)
    config = config_module.load(args.config)
    return Context(
        config,
        state_dir(config, args.state_dir),
        Console(highlight=False, soft_wrap=True),
    )


def warn_operator_unset(context: Context) -> None:
    """Warn on stderr when certificates would leave operator fields empty."""
    unset = context.config.operator.unset_keys()
    if not unset:
        return
    where = (
        context.config.path
        or "a config file given with -c (config/lethe.yaml shows every key)"
    )
    print(
        f"lethe: warning: the certificate will leave {', '.join(unset)} empty; "
        f"set them in {where}",
        file=sys.stderr,
    )


def targets_from(
    args_targets: list[str], config: Config, registry: Registry | None = None
) -> list[Target]:
    """Targets from the command line (with options from the config), else the config's.

    With a registry, a command-line target takes the options of the config
    target with the same canonical form, so ``/data/x/``, ``/data/x`` and
    ``file:///data/x`` all get the options given for any one of them.
    """
    if not args_targets:
        return list(config.targets)
    options = {target.url: target.options for target in config.targets}
    if registry is not None:
        for target in config.targets:
            canonical = _canonical_url(registry, target)
            if canonical is not None:
                options.setdefault(canonical, target.options)
    targets = []
    for url in args_targets:
        found = options.get(url)
        if found is None and registry is not None:
            canonical = _canonical_url(registry, Target(url))
            found = options.get(canonical) if canonical is not None else None
        targets.append(Target(url, found or {}))
    return targets


def _canonical_url(registry: Registry, target: Target) -> str | None:
    """Return the target's canonical URL, or None when no plugin can tell it yet.

    Planning reports an unknown scheme or a malformed URL with its own
    message, so those errors are left to it.
    """
    try:
        return registry.plugin_for(target).canonical_target(target).url
    except (LetheError, PluginError):
        return None


def print_json(value: Any) -> None:
    json.dump(
        value, sys.stdout, indent=2, sort_keys=True, ensure_ascii=True, default=str
    )
    sys.stdout.write("\n")


@contextmanager
def stop_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Call ``request_stop`` on SIGTERM and SIGINT instead of ending the process.

    The engine's stop request ends a purge after the item in flight and a
    plan before its next item. A callback that raises ends the command at
    once, as the wait for a typed confirmation needs.
    """
    handler = lambda signum, frame: request_stop()
    previous = {
        number: signal.signal(number, handler)
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
