"""``lethe plugins``: installed plugins, their schemes, methods and status."""

from __future__ import annotations

import argparse

from rich.table import Table

from agent.commands.common import load_context, parent_parser, print_json
from agent.errors import EXIT_OK
from agent.registry import Registry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins", parents=[parent_parser()], help="list installed plugins"
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    context = load_context(args)
    statuses = list(Registry.from_entry_points().statuses())
    if args.json:
        print_json([vars(status) for status in statuses])
        return EXIT_OK
    table = Table("plugin", "schemes", "methods", "status")
    for status in statuses:
        table.add_row(
            status.name,
            ", ".join(status.schemes),
            ", ".join(status.methods),
            status.status,
        )
    context.console.print(table)
    return EXIT_OK
