"""``lethe purge``: plan, confirm, purge, verify and certify."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from agent import plan as plan_module
from agent import progress, render
from agent.commands.common import (
    Context,
    load_context,
    parent_parser,
    print_json,
    stop_on_signals,
    targets_from,
    warn_operator_unset,
)
from agent.commands.plan import add_target_arguments, save_plan, show_plan
from agent.engine import Engine, JobOutcome
from agent.errors import EXIT_FAILED, JobStopped, UsageError

CONFIRMATION_WORD = "purge"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "purge",
        parents=[parent_parser()],
        help="destroy what the plan selects, verify it and sign a certificate",
        description="Show the plan, ask for confirmation, purge, verify and certify.",
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--plan",
        metavar="PLAN.json",
        help="run a plan saved by 'lethe plan -o' after checking it still matches",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="purge without the typed confirmation (for automation)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only plan, like 'lethe plan'"
    )
    parser.add_argument(
        "--resume", metavar="JOB", help="continue an interrupted job from its journal"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    context = load_context(args)
    engine = Engine(context.config, context.state_dir, progress=progress.for_terminal())
    try:
        if args.resume:
            with stop_on_signals(engine.request_stop):
                return _report(engine.resume(args.resume), args, context.console)
        return _plan_and_purge(engine, args, context)
    finally:
        engine.close()


def _check_arguments(args: argparse.Namespace) -> None:
    if args.plan and args.targets:
        raise UsageError(
            "give either targets or --plan, not both: a saved plan names its own targets"
        )
    if args.resume and (args.plan or args.targets or args.dry_run):
        raise UsageError(
            "--resume continues a journaled job; it takes no targets, --plan or --dry-run"
        )
    # A resumed job continues a plan that was confirmed when the job started.
    if not (args.dry_run or args.yes or args.resume or sys.stdin.isatty()):
        raise UsageError(
            "stdin is not a terminal, so the purge cannot be confirmed; "
            "pass --yes to purge without confirmation, or --dry-run to only plan"
        )


def _plan_and_purge(engine: Engine, args: argparse.Namespace, context: Context) -> int:
    saved = plan_module.read_plan_file(args.plan) if args.plan else None
    if saved is not None:
        targets, settings = saved.targets, saved.settings
    else:
        targets = targets_from(args.targets, context.config, engine.registry)
        settings = context.config.settings.as_plugin_settings()
    with stop_on_signals(engine.request_stop):
        job_id = engine.plan(
            targets, settings, dry_run=args.dry_run, source_plan=args.plan
        )
        # Warned only after a plan, so a usage error is not preceded by it.
        warn_operator_unset(context)
        if saved is not None and _plan_changed(engine, job_id, saved, context.console):
            return EXIT_FAILED
        if args.dry_run:
            return show_plan(engine, job_id, args, context.console)
        summary = save_plan(engine, job_id, args)
        if not args.json:
            render.print_plan(context.console, summary, dry_run=False)
    try:
        # Until the purge begins, a stop cancels the job, and the wait for
        # the typed confirmation ends at once.
        with stop_on_signals(_raise_stopped):
            if engine.stop_requested:
                _raise_stopped()
            confirmed = args.yes or _confirmed(context.console, summary)
    except JobStopped:
        engine.journal.update_job(job_id, state="cancelled")
        raise JobStopped(
            f"stopped before the purge of job {job_id} began; nothing was "
            "destroyed, and the job is cancelled (lethe status lists it)"
        ) from None
    if not confirmed:
        engine.journal.update_job(job_id, state="cancelled")
        raise UsageError("purge cancelled at the confirmation; nothing was destroyed")
    with stop_on_signals(engine.request_stop):
        outcome = engine.purge(job_id)
    return _report(outcome, args, context.console)


def _raise_stopped() -> None:
    raise JobStopped("stopped by a signal")


def _plan_changed(
    engine: Engine, job_id: str, saved: plan_module.SavedPlan, console: Console
) -> bool:
    """Compare a fresh discovery with the saved plan and report every difference."""
    shown: list[dict] = []
    total = 0
    for difference in plan_module.compare(saved, engine.journal, job_id):
        total += 1
        if len(shown) < plan_module.DIFFERENCES_SHOWN:
            shown.append(difference)
    if total == 0:
        return False
    engine.journal.update_job(job_id, state="mismatch")
    engine.audit.append(
        "plan-mismatch",
        job_id=job_id,
        saved_plan_hash=saved.plan_hash,
        differences=total,
    )
    render.print_differences(console, shown, total)
    return True


def _confirmed(console: Console, summary: dict) -> bool:
    totals = summary["totals"]
    console.print(
        f"This destroys {render.plural(totals['permitted'], 'item')} "
        f"({render.human_bytes(totals['permitted_bytes'])}) "
        f"and cannot be undone. Type '{CONFIRMATION_WORD}' to continue: ",
        end="",
    )
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip() == CONFIRMATION_WORD


def _report(outcome: JobOutcome, args: argparse.Namespace, console: Console) -> int:
    summary = outcome.summary()
    if getattr(args, "json", False):
        print_json(summary)
    else:
        render.print_outcome(console, summary)
    return outcome.exit_code
