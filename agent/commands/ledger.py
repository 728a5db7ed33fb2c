"""``lethe ledger show|verify|replay``: the erasure ledger of past purges."""

from __future__ import annotations

import argparse
import sys

from agent import ledger, render
from agent.commands.common import (
    Context,
    load_context,
    parent_parser,
    print_json,
    targets_from,
)
from agent.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, UsageError
from agent.registry import Registry

CONFIRMATION_WORD = "replay"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="show, verify or replay the erasure ledger of past purges",
        description="Every purge appends what it destroyed to the erasure ledger. "
        "'replay' re-applies it to a restored backup.",
    )
    verbs = parser.add_subparsers(dest="ledger_command", required=True, metavar="VERB")

    show = verbs.add_parser(
        "show", parents=[parent_parser()], help="list the ledger entries"
    )
    show.add_argument(
        "--json", action="store_true", help="print the entries as JSON lines"
    )
    show.set_defaults(run=run_show)

    check = verbs.add_parser(
        "verify", parents=[parent_parser()], help="check the ledger's hash chain"
    )
    check.set_defaults(run=run_verify)

    replay = verbs.add_parser(
        "replay",
        parents=[parent_parser()],
        help="re-apply every recorded purge to restored copies",
        description="Match each recorded target to a TARGET of the same scheme whose "
        "base URL, last path component or an enclosing directory matches (a restored "
        "database file or directory; key://* for a restored key store), plan the "
        "recorded selector there, show what resurfaced, then purge and certify it.",
    )
    replay.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="restored database, directory or bucket",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="only show what resurfaced"
    )
    replay.add_argument(
        "--yes", action="store_true", help="purge without the typed confirmation"
    )
    replay.add_argument(
        "--json", action="store_true", help="print the replay report as JSON"
    )
    replay.set_defaults(run=run_replay)


def run_show(args: argparse.Namespace) -> int:
    context = load_context(args)
    for entry in ledger.entries(context.state_dir):
        if args.json:
            print_json(entry)
            continue
        context.console.print(
            f"#{entry['seq']} {entry['time']} job {entry.get('job_id')}"
        )
        for record in entry.get("targets", ()):
            context.console.print(
                f"  {record['base']} {record.get('selector') or ''}: "
                f"{render.plural(record['count'], 'item')}"
            )
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    context = load_context(args)
    count = ledger.verify(context.state_dir)
    context.console.print(
        f"erasure ledger intact: {render.plural(count, 'entry', 'entries')} chained"
    )
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    if not (args.dry_run or args.yes or sys.stdin.isatty()):
        raise UsageError(
            "stdin is not a terminal, so the replay cannot be confirmed; pass --yes or --dry-run"
        )
    context = load_context(args)
    report = ledger.replay(
        context.config,
        context.state_dir,
        targets_from(args.targets, context.config, Registry.from_entry_points()),
        context.config.settings.as_plugin_settings(),
        dry_run=args.dry_run,
        confirm=None if args.yes else lambda found: _confirmed(context, found),
    )
    if args.json:
        print_json(report.as_json())
    else:
        _print_report(context, report, args.dry_run)
    if report.outcome is not None and report.outcome.exit_code == EXIT_FAILED:
        return EXIT_FAILED
    if report.problems or report.unmatched:
        return EXIT_REFUSED
    return report.outcome.exit_code if report.outcome is not None else EXIT_OK


def _confirmed(context: Context, report: ledger.ReplayReport) -> bool:
    _print_found(context, report)
    context.console.print(
        f"Type '{CONFIRMATION_WORD}' to purge the resurfaced items: ", end=""
    )
    try:
        return input().strip() == CONFIRMATION_WORD
    except EOFError:
        return False


def _print_found(context: Context, report: ledger.ReplayReport) -> None:
    for unit in report.units:
        context.console.print(
            f"{unit.target.url}: {unit.resurfaced} of {len(unit.digests)} recorded items resurfaced "
            f"({render.human_bytes(unit.resurfaced_bytes)})"
        )


def _print_report(context: Context, report: ledger.ReplayReport, dry_run: bool) -> None:
    _print_found(context, report)
    for problem in report.problems:
        context.console.print(
            f"not applied: {problem.source} on {problem.target}: {problem.error}"
        )
    for source in report.unmatched:
        context.console.print(f"no restored target given for {source}")
    if report.outcome is not None:
        render.print_outcome(context.console, report.outcome.summary())
    elif dry_run and report.resurfaced:
        context.console.print(f"would purge {report.resurfaced} resurfaced items")
    elif not report.resurfaced:
        context.console.print("nothing resurfaced")
