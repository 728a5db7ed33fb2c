"""``lethe certificate show|verify FILE``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from agent import certificate, keys, render
from agent.audit import AuditLog
from agent.commands.common import load_context, parent_parser, print_json
from agent.errors import EXIT_FAILED, EXIT_OK, UsageError

FILE_HELP = (
    "certificate JSON file, or the job id of a certificate in the state "
    "directory's certificates/ folder"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certificate", help="show or verify a certificate of sanitization"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", parents=[parent_parser()], help="print a certificate"
    )
    show.add_argument("file", metavar="FILE", help=FILE_HELP)
    show.add_argument(
        "--html", metavar="OUT", help="write the certificate as HTML to OUT"
    )
    show.add_argument("--json", action="store_true", help="print the certificate JSON")
    show.set_defaults(run=run_show)
    check = actions.add_parser(
        "verify",
        parents=[parent_parser()],
        help="check the signature, the signing key and the audit-log entry",
    )
    check.add_argument("file", metavar="FILE", help=FILE_HELP)
    check.set_defaults(run=run_verify)


def run_show(args: argparse.Namespace) -> int:
    context = load_context(args)
    args.file = certificate_file(args.file, context.state_dir)
    document = certificate.read(args.file)
    if args.html:
        Path(args.html).write_text(certificate.render_html(document), encoding="utf-8")
    if args.json:
        print_json(document)
        return EXIT_OK
    console = context.console
    counts = document["counts"]
    console.print(
        f"certificate {document['certificate_id']} for job {document['job_id']}, {document['date']}"
    )
    person = document["person"]
    named = f"{person['name']} {person['title']}".strip() or "not given"
    console.print(f"person: {named}", markup=False)
    organization = document["organization"]["name"] or "not given"
    console.print(f"organization: {organization}", markup=False)
    for medium in document["media"]:
        console.print(f"media: {medium['target']} ({medium['plugin']})", markup=False)
    console.print(f"method type: {document['sanitization']['method_type']}")
    for line in _method_lines(document["sanitization"]["methods"]):
        console.print(f"  {line}", markup=False)
    console.print(
        f"verification: {document['verification']['result']}: {document['verification']['method']}"
    )
    console.print(
        ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items())
    )
    for note in document["notes"]:
        console.print(f"note: {note}", markup=False)
    console.print(f"plan hash: {document['plan_hash']}")
    console.print(f"signed by: {document['signature']['public_key_fingerprint']}")
    return EXIT_OK


def _method_lines(methods: list[dict[str, Any]]) -> list[str]:
    """Describe each distinct method once, summing its entries' counts.

    The certificate lists a method once per distinct set of details (files
    and directories, for example), which would repeat the same label here.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for method in methods:
        entry = merged.setdefault(
            (method["method"], method["category"]),
            {"items": 0, "bytes": 0, "short": 0, "fewest": None},
        )
        entry["items"] += method["items"]
        entry["bytes"] += method.get("bytes", 0)
        short = method.get("items_with_fewer_passes", 0)
        if short:
            entry["short"] += short
            fewest = method["fewest_passes_done"]
            entry["fewest"] = min(fewest, entry["fewest"] or fewest)
    lines = []
    for (name, category), entry in merged.items():
        line = (
            f"{name} ({category}): {render.plural(entry['items'], 'item')}, "
            f"{render.plural(entry['bytes'], 'byte')}"
        )
        if entry["short"]:
            line += (
                f"; {render.plural(entry['short'], 'item')} stopped early, after as "
                f"few as {render.plural(entry['fewest'], 'pass', 'passes')}"
            )
        lines.append(line)
    return lines


def run_verify(args: argparse.Namespace) -> int:
    context = load_context(args)
    args.file = certificate_file(args.file, context.state_dir)
    document = certificate.read(args.file)
    trusted = keys.existing_public_key(context.state_dir)
    report = certificate.verify(document, AuditLog.open(context.state_dir), trusted)
    for name, passed, detail in report.checks:
        context.console.print(
            f"{'ok' if passed else 'FAILED'}: {name}: {detail}", markup=False
        )
    if report.valid:
        context.console.print(f"certificate {args.file} is valid")
        return EXIT_OK
    context.console.print(f"certificate {args.file} is NOT valid")
    return EXIT_FAILED


def certificate_file(name: str, state_dir: Path) -> str:
    """Return the certificate path for a file name or a job id."""
    if os.path.lexists(name):
        return name
    stored = state_dir / certificate.DIRECTORY / f"{name}.json"
    if "/" not in name and stored.is_file():
        return str(stored)
    raise UsageError(
        f"no certificate file {name}: certificates are stored as {stored.parent}/JOB.json, "
        "named by job id, and only a job that finished without failures has one. "
        "Give --state-dir or -c when the job ran with another state directory"
    )
