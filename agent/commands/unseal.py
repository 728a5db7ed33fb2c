"""``lethe unseal FILE...``: restore the plaintext of sealed files."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent import keystore
from agent import seal as seal_module
from agent.commands.common import load_context, parent_parser
from agent.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unseal",
        parents=[parent_parser()],
        help="decrypt sealed files for an authorised restore",
        description="Decrypt each FILE.lethe to FILE. The output appears only after the "
        "last chunk authenticates; a truncated or altered file leaves no output.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="sealed file")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="output name (one FILE only; default FILE without .lethe)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output and len(args.files) != 1:
        raise UsageError(
            "--output names one output file; give exactly one FILE with it"
        )
    context = load_context(args)
    store = keystore.open_store(context.config, context.state_dir)
    for name in args.files:
        source = Path(name)
        destination = (
            Path(args.output) if args.output else seal_module.unsealed_name(source)
        )
        result = seal_module.unseal_file(source, destination, store)
        context.console.print(
            f"unsealed {name} -> {destination} ({result.plaintext_bytes} bytes)"
        )
    return 0
