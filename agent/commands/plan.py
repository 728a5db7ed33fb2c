"""``lethe plan``: the dry run that shows what a purge would do."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from agent import render
from agent.commands.common import (
    load_context,
    parent_parser,
    print_json,
    stop_on_signals,
    targets_from,
    warn_operator_unset,
)
from agent.engine import Engine
from agent.errors import EXIT_OK, EXIT_REFUSED
from agent.plan import write_plan_file
from agent.policy.report import write_policy_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        parents=[parent_parser()],
        help="show what a purge would destroy, refuse and leave behind",
        description="Discover the targets and print the plan; nothing is changed.",
    )
    add_target_arguments(parser)
    parser.set_defaults(run=run)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="target URL or path (default: targets in the config)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the plan summary as JSON"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write the plan summary as HTML to FILE"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PLAN.json",
        help="save the plan for a later 'lethe purge --plan'",
    )
    parser.add_argument(
        "--policy-report",
        metavar="FILE",
        help="also write the policy report (by class, hold and method) to FILE: "
        "HTML for .html, JSON for .json, text otherwise",
    )


def run(args: argparse.Namespace) -> int:
    context = load_context(args)
    engine = Engine(context.config, context.state_dir)
    try:
        targets = targets_from(args.targets, context.config, engine.registry)
        with stop_on_signals(engine.request_stop):
            job_id = engine.plan(
                targets, context.config.settings.as_plugin_settings(), dry_run=True
            )
        # Warned only after a plan, so a usage error is not preceded by it.
        warn_operator_unset(context)
        return show_plan(engine, job_id, args, context.console)
    finally:
        engine.close()


def show_plan(
    engine: Engine, job_id: str, args: argparse.Namespace, console: Console
) -> int:
    """Print or save a planned job's summary; return 1 when items are refused."""
    summary = save_plan(engine, job_id, args)
    if args.json:
        print_json(summary)
    else:
        render.print_plan(console, summary, dry_run=True)
        if args.output:
            console.print(f"plan saved to {args.output}")
    return EXIT_REFUSED if summary["totals"]["refused"] else EXIT_OK


def save_plan(engine: Engine, job_id: str, args: argparse.Namespace) -> dict:
    """Write the plan file (-o) and the HTML summary (--html) when requested."""
    summary = dict(engine.journal.job(job_id).summary or {})
    if args.output:
        write_plan_file(args.output, engine.journal, job_id, summary)
    if args.html:
        Path(args.html).write_text(render.plan_html(summary), encoding="utf-8")
    if getattr(args, "policy_report", None):
        write_policy_report(args.policy_report, engine.policy.tally, summary)
    return summary
