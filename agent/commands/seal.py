"""``lethe seal PATH... --subject ID``: encrypt files under a subject's data key."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent import keystore
from agent import seal as seal_module
from agent.commands.common import load_context, parent_parser, print_json
from agent.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "seal",
        parents=[parent_parser()],
        help="encrypt files with a subject's data key, so destroying the key destroys every copy",
        description="Encrypt each PATH to PATH.lethe with AES-256-GCM under the data key of "
        "the subject (created on first use). The plaintext is left in place: destroy it "
        "with 'lethe purge PATH' once the sealed copy is stored.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file to seal")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--subject",
        metavar="ID",
        help="subject whose data key seals the files (use a pseudonymous id)",
    )
    group.add_argument(
        "--dataset",
        metavar="NAME",
        help="seal under a per-dataset key instead of a per-subject key",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="sealed file name (one PATH only; default PATH.lethe)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print what was sealed as JSON"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output and len(args.paths) != 1:
        raise UsageError(
            "--output names one sealed file; give exactly one PATH with it"
        )
    context = load_context(args)
    store = keystore.open_store(context.config, context.state_dir)
    subject = args.subject if args.subject else f"dataset:{args.dataset}"
    sealed = []
    for name in args.paths:
        source = Path(name)
        destination = (
            Path(args.output) if args.output else seal_module.sealed_name(source)
        )
        result = seal_module.seal_file(source, destination, store, subject)
        sealed.append(
            {"path": name, "sealed": str(destination), "bytes": result.plaintext_bytes}
        )
        if not args.json:
            context.console.print(
                f"sealed {name} -> {destination} ({result.plaintext_bytes} bytes)"
            )
    if args.json:
        print_json({"subject": subject, "files": sealed})
    else:
        context.console.print(
            "the plaintext files are unchanged; destroy them with 'lethe purge PATH'"
        )
    return 0
