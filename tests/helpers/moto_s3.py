"""Seed moto's S3 backend quickly, and serve a seeded moto S3 in its own process.

Creating thousands of versions through HTTP takes minutes on moto, so tests
and benchmarks write them straight into the backend of a moto server that
runs in the same process. Run as a module, this starts such a server, seeds
versioned buckets, prints ``{"endpoint": ...}`` on one line and serves until
its standard input closes. The client then runs in another process, so its
memory can be measured alone.

    python -m tests.helpers.moto_s3 --bucket NAME=VERSIONS[+MARKERS] ...
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
from typing import Any


def s3_backend() -> Any:
    """Return the in-process moto S3 backend of the default account."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def seed_versions(
    bucket: str, versions: int, markers: int = 0, keys: int = 0, prefix: str = "data/"
) -> None:
    """Write ``versions`` object versions over ``keys`` keys, then delete markers.

    The bucket must exist and have versioning enabled. With ``keys`` of 0 each
    version gets its own key. Each marker goes on top of a different key.
    """
    backend = s3_backend()
    keys = keys or versions
    for number in range(versions):
        backend.put_object(bucket, f"{prefix}{number % keys:07d}", b"v%d" % number)
    for number in range(markers):
        backend.delete_object(bucket, f"{prefix}{number % keys:07d}")


class _ShallowVersionCopies:
    """Stand-in for the ``copy`` module inside ``moto.s3.models``.

    moto 5.2's ListObjectVersions deep-copies every version in the bucket on
    each call, and each deep copy of a key rewrites its content into a new
    temporary file. That function is the module's only ``deepcopy`` caller
    and reads only the copies' metadata, so a copy of each version's
    attributes serves it the same fields at a fraction of the cost. A key
    closes its content buffer when it is garbage-collected, so each copy gets
    an empty buffer of its own, after the original has cached its ETag.
    """

    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(versions: list[Any]) -> list[Any]:
        clones = []
        for version in versions:
            if hasattr(version, "_value_buffer"):
                version.etag  # noqa: B018 computes and caches the ETag
            clone = object.__new__(type(version))
            clone.__dict__.update(version.__dict__)
            if hasattr(version, "_value_buffer"):
                clone._value_buffer = io.BytesIO()
                clone.multipart = None
            clones.append(clone)
        return clones


def use_shallow_listing() -> None:
    """Make moto's ListObjectVersions copy each version's attributes only."""
    from moto.s3 import models

    models.copy = _ShallowVersionCopies()


def create_iam_users() -> dict[str, dict[str, str]]:
    """Create the user ``no-access``, which has no policy; return its access keys.

    NOTE: moto 5.2 checks single-object requests against IAM policies but not
    DeleteObjects, so a user denied deletes only could still delete there.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "no-access")
    key = iam.create_access_key("no-access")
    return {"no-access": {"id": key.access_key_id, "secret": key.secret_access_key}}


def serve(arguments: argparse.Namespace) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    from moto.server import ThreadedMotoServer

    if arguments.shallow_listing:
        use_shallow_listing()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        backend = s3_backend()
        for spec in arguments.bucket:
            bucket, _, sizes = spec.partition("=")
            versions, _, markers = sizes.partition("+")
            backend.create_bucket(bucket, "us-east-1")
            backend.put_bucket_versioning(bucket, "Enabled")
            seed_versions(bucket, int(versions or 0), int(markers or 0))
        ready: dict[str, Any] = {"endpoint": f"http://{host}:{port}"}
        if arguments.iam:
            from moto import settings

            ready["users"] = create_iam_users()
            # From here on, moto checks every request against IAM policies.
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        print(json.dumps(ready), flush=True)
        sys.stdin.read()
    finally:
        server.stop()


def start_seeded_server(
    *buckets: str, iam: bool = False, shallow_listing: bool = False
) -> tuple[Any, dict]:
    """Start :func:`serve` in a child process; return the process and its ready line.

    The ready line has ``endpoint`` and, with ``iam``, ``users``: access keys
    by user name. ``shallow_listing`` applies :func:`use_shallow_listing`.
    """
    import subprocess

    command = [sys.executable, "-m", "tests.helpers.moto_s3"]
    if iam:
        command.append("--iam")
    if shallow_listing:
        command.append("--shallow-listing")
    for spec in buckets:
        command += ["--bucket", spec]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ),
    )
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"seeded moto server exited with {process.returncode}")
    return process, json.loads(line)


def stop_seeded_server(process: Any) -> None:
    """Close the child's standard input so it stops, then reap it."""
    import subprocess

    process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bucket",
        action="append",
        required=True,
        help="NAME=VERSIONS[+MARKERS]: a versioned bucket with that many versions "
        "(one per key, under data/) and delete markers on the first keys",
    )
    parser.add_argument(
        "--iam",
        action="store_true",
        help="create the IAM user no-access, then enforce IAM policies",
    )
    parser.add_argument(
        "--shallow-listing",
        action="store_true",
        help="copy only each version's attributes in ListObjectVersions",
    )
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
