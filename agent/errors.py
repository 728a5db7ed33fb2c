"""Lethe's error hierarchy; each class carries the process exit code it maps to.

Exit codes, as documented in the README:

- 0: everything selected was destroyed and verified
- 1: some items were refused or blocked, but nothing failed
- 2: something failed, or verification disagreed with the purge
- 3: usage or configuration error
"""

from __future__ import annotations

from plugins import errors as plugin_errors

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_FAILED = 2
EXIT_USAGE = 3


class LetheError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class UsageError(LetheError):
    """The command line is invalid."""

    exit_code = EXIT_USAGE


class ConfigError(LetheError):
    """The configuration file is unreadable or invalid."""

    exit_code = EXIT_USAGE


class PlanMismatch(LetheError):
    """The world no longer matches a saved plan, so nothing was destroyed."""

    exit_code = EXIT_FAILED


class PlanFileInvalid(UsageError):
    """A saved plan file was edited or damaged, so it cannot be trusted."""


class UnknownJob(UsageError):
    """The job id given is not in the journal of the state directory."""


class JobStopped(LetheError):
    """SIGTERM or Ctrl-C stopped a job before anything was destroyed."""

    exit_code = EXIT_FAILED


class VerificationFailed(LetheError):
    """The independent rescan found data that the purge should have destroyed."""

    exit_code = EXIT_FAILED


class JournalError(LetheError):
    """The job journal is missing, locked or inconsistent."""

    exit_code = EXIT_FAILED


#: Exit code for each error a plugin may raise, when it ends a whole command.
PLUGIN_EXIT_CODES: dict[type[plugin_errors.PluginError], int] = {
    plugin_errors.InvalidTarget: EXIT_USAGE,
    plugin_errors.TargetNotFound: EXIT_USAGE,
    plugin_errors.MissingDependency: EXIT_USAGE,
    plugin_errors.AccessDenied: EXIT_FAILED,
    plugin_errors.TargetUnreachable: EXIT_FAILED,
    plugin_errors.ItemChanged: EXIT_FAILED,
    plugin_errors.PurgeFailed: EXIT_FAILED,
    plugin_errors.NotSupported: EXIT_FAILED,
}


def exit_code_for(error: BaseException) -> int:
    """Return the exit code for an error raised out of a command."""
    if isinstance(error, LetheError):
        return error.exit_code
    for cls in type(error).__mro__:
        if cls in PLUGIN_EXIT_CODES:
            return PLUGIN_EXIT_CODES[cls]
    return EXIT_FAILED
