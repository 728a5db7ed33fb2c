"""Parts of the S3 plugin: entries, bucket facts, listing, purge, completion."""

from __future__ import annotations

from typing import Any

from plugins.errors import MissingDependency

MISSING_BOTO3 = "the S3 plugin needs boto3; install it with: pip install 'lethe[s3]'"


def client_error() -> Any:
    """Return botocore's ClientError class, or raise MissingDependency without boto3.

    Methods that catch ClientError take it from here, because some of them
    run before the client exists (describe), and a bare
    botocore import there would fail without the guarded message.
    """
    try:
        from botocore.exceptions import ClientError
    except ImportError as exc:
        raise MissingDependency(MISSING_BOTO3) from exc
    return ClientError
