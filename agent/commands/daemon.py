"""``lethe daemon``: run scheduled policies and spooled plans until stopped."""

from __future__ import annotations

import argparse
import sys

from agent import log
from agent.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "daemon",
        help="run scheduled policies and submitted plans (under systemd)",
        description=(
            "Resume unfinished jobs, then run the schedules of the config's daemon "
            "section and the plans that 'lethe submit' spools, logging JSON lines "
            "to stdout. SIGTERM stops after the item in flight; SIGHUP reloads "
            "the config."
        ),
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        required=True,
        help="configuration file (YAML)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory of the journal, audit log, key and certificates "
        "(default: $LETHE_STATE_DIR, state_dir in the config, /var/lib/lethe as root)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="log level of the JSON lines on stdout (default: INFO)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    log.configure(args.log_level, json_output=True, stream=sys.stdout)
    try:
        from agent.daemon.service import Daemon
    except ModuleNotFoundError as error:
        raise UsageError(
            f"the daemon needs the package {error.name}; "
            "install it with: pip install 'lethe[daemon]'"
        ) from error
    return Daemon(args.config, args.state_dir).run()
