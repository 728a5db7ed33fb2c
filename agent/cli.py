"""The ``lethe`` command: parses arguments and maps errors to exit codes."""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import NoReturn

import structlog

import agent
from agent.commands import (
    certificate,
    daemon,
    ledger,
    plan,
    plugins,
    purge,
    seal,
    status,
    submit,
    unseal,
    verify,
)
from agent.errors import EXIT_FAILED, LetheError, UsageError, exit_code_for
from plugins.errors import PluginError

#: Verb modules; each adds its subcommand through ``register(subparsers)``.
COMMAND_MODULES = [
    plan,
    purge,
    verify,
    certificate,
    plugins,
    seal,
    unseal,
    ledger,
    submit,
    daemon,
    status,
]


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with code 3, not 2."""

    def error(self, message: str) -> NoReturn:
        # main() prints "lethe: error: " before the message, so the program
        # name is not repeated here; the help command names the subcommand.
        raise UsageError(f"{message}; see '{self.prog} --help'")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0].startswith("-") and argv[0] not in TOP_LEVEL_OPTIONS:
            raise UsageError(
                f"option {argv[0]} must follow the command, "
                f"as in 'lethe plan {argv[0]} ...'; see 'lethe --help'"
            )
        return super().parse_args(argv, namespace)


#: Commands that destroy nothing, so an internal error needs no resume.
READ_ONLY_COMMANDS = ("plan", "verify", "certificate", "plugins", "status")
#: Options the top-level parser accepts before a command.
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="lethe",
        description="Plan, purge, verify and certify the destruction of data.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lethe {agent.__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # File names may hold undecodable bytes (surrogate escapes); show them
    # escaped instead of failing on output.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return args.run(args)
    except (LetheError, PluginError) as error:
        print(f"lethe: error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print("lethe: interrupted before any item was destroyed", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader of stdout went away (lethe status | head). Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 (exit 1 would wrongly mean "refused")
        if _disk_full(error):
            structlog.get_logger(__name__).error("disk full", error=str(error))
            print(
                f"lethe: error: no space left on a filesystem that Lethe writes to "
                f"({error}); free space there (the state directory holds the journal, "
                "audit log and certificates). A purge that had started continues with "
                f"lethe purge --resume {_job_hint()}, anything else can simply run again",
                file=sys.stderr,
            )
            return EXIT_FAILED
        structlog.get_logger(__name__).exception("internal error", error=repr(error))
        if command in READ_ONLY_COMMANDS:
            advice = f"lethe {command} destroys nothing, so it can simply run again"
        else:
            advice = (
                "the journal keeps every item's state, so an interrupted purge "
                f"can continue with lethe purge --resume {_job_hint()}"
            )
        print(f"lethe: internal error: {error!r}; {advice}", file=sys.stderr)
        return EXIT_FAILED


def _job_hint() -> str:
    """Return the id of the job this process last worked on, or how to find it."""
    from agent import engine

    return engine.last_job_id or "JOB (lethe status lists the job)"


def _disk_full(error: BaseException) -> bool:
    """Tell whether an error means a full filesystem (ENOSPC, or SQLite's SQLITE_FULL)."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


if __name__ == "__main__":
    sys.exit(main())
