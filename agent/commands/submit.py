"""``lethe submit``: hand a saved plan to the daemon through its spool."""

from __future__ import annotations

import argparse
from pathlib import Path

import agent.daemon  # noqa: F401 (registers the daemon config section)
from agent.commands.common import load_context, parent_parser, print_json
from agent.daemon import DaemonConfig
from agent.daemon.spool import InvalidPlan, Spool, check_plan
from agent.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        parents=[parent_parser()],
        help="queue a saved plan for the daemon",
        description=(
            "Check a plan saved by 'lethe plan -o' (format, plan hash, targets the "
            "daemon config allows) and write it into the daemon's spool atomically."
        ),
    )
    parser.add_argument("plan", metavar="PLAN.json", help="plan file to submit")
    parser.add_argument(
        "--json", action="store_true", help="print the spool path as JSON"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    context = load_context(args)
    daemon = context.config.sections.get("daemon") or DaemonConfig()
    try:
        check_plan(Path(args.plan), daemon)
    except InvalidPlan as error:
        raise UsageError(f"{args.plan}: {error}") from error
    spool = Spool.for_config(context.config, context.state_dir)
    path = spool.submit(Path(args.plan))
    if args.json:
        print_json({"spool_file": str(path)})
    else:
        print(f"submitted {args.plan} as {path}")
    return 0
