"""``lethe verify JOB``: repeat the independent rescan of a finished job."""

from __future__ import annotations

import argparse

from agent import render
from agent.commands.common import load_context, parent_parser, print_json
from agent.engine import Engine


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        parents=[parent_parser()],
        help="rescan the items of a finished job and report any that came back",
        description="Repeat the verification of a job's destroyed items. Fingerprints "
        "are not kept after a job, so raw-byte scans do not run again.",
    )
    parser.add_argument("job", metavar="JOB", help="job id, as printed by lethe purge")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    context = load_context(args)
    engine = Engine(context.config, context.state_dir)
    try:
        outcome = engine.reverify(args.job)
    finally:
        engine.close()
    if args.json:
        print_json(outcome.summary())
    else:
        render.print_rescan(context.console, outcome.summary())
    return outcome.exit_code
