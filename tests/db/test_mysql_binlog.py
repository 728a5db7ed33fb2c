"""MariaDB plugin against a private MariaDB server with the binary log on."""

from __future__ import annotations

import os
import secrets

import pytest

from plugins.errors import InvalidTarget
from plugins.mysql import MySQLPlugin
from tests.db.conftest import canary, files_contain, mysql_admin
from tests.helpers.driver import run_plugin


@pytest.fixture
def binlog_database(mariadb_binlog):
    """Create a database on the private server; yield (URL, port); drop it after."""
    port = mariadb_binlog
    name = f"lethe_db_{secrets.token_hex(4)}"
    with mysql_admin(port=port) as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql://root@127.0.0.1:{port}/{name}", port
    finally:
        with mysql_admin(port=port) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def binlog_files(port: int) -> list[str]:
    with mysql_admin(port=port) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT @@log_bin_basename")
        folder = os.path.dirname(cursor.fetchone()[0])
        cursor.execute("SHOW BINARY LOGS")
        return [os.path.join(folder, row[0]) for row in cursor.fetchall()]


def fill(url: str, port: int, rows: int = 12) -> dict[int, str]:
    markers = {number: canary(f"b{number}") for number in range(rows)}
    database = url.rsplit("/", 1)[1]
    with mysql_admin(database, port=port) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(200)) ENGINE=InnoDB"
        )
        for number, marker in markers.items():
            cursor.execute("INSERT INTO people VALUES (%s, %s)", (number, marker))
    return markers


def test_plan_reports_binlog_residue(binlog_database):
    url, port = binlog_database
    fill(url, port, rows=3)

    run = run_plugin(MySQLPlugin, f"{url}?table=people&where=id = %s", {"params": [1]}, purge=False)

    residual = " ".join(run.info.residual)
    assert "the binary log is on" in residual
    assert "binlog_format=ROW" in residual
    assert "purge_binary_logs: true" in residual
    notes = " ".join(run.info.notes)
    assert "binary log on" in notes


def test_binlog_kept_without_option(binlog_database):
    url, port = binlog_database
    markers = fill(url, port)

    run = run_plugin(MySQLPlugin, f"{url}?table=people&where=id < %s", {"params": [5]})

    assert not run.unverified()
    assert "purge-binary-logs" not in {step.key for step in run.completion}
    # The stated residual risk is real: the rows stay in the binary log.
    assert files_contain(binlog_files(port), markers[2].encode())


def test_purge_binary_logs_removes_rows(binlog_database):
    url, port = binlog_database
    markers = fill(url, port)
    assert files_contain(binlog_files(port), markers[2].encode())

    run = run_plugin(
        MySQLPlugin,
        f"{url}?table=people&where=id < %s",
        {"params": [5], "purge_binary_logs": True},
    )

    steps = {step.key: step for step in run.completion}
    assert steps["purge-binary-logs"].status == "purged"
    assert steps["purge-binary-logs"].facts["removed"]
    assert not run.unverified()
    details = " ".join(
        check.detail for evidence in run.evidence for check in evidence.checks
    )
    # The .ibd file and at least the one binary log left were scanned.
    assert "in 2 data file(s)" in details
    files = binlog_files(port)
    for number in range(5):
        assert not files_contain(files, markers[number].encode())
    assert "binary log" in " ".join(run.info.residual)


def test_purge_binary_logs_rejects_word(binlog_database):
    url, _ = binlog_database

    with pytest.raises(InvalidTarget, match="purge_binary_logs"):
        run_plugin(
            MySQLPlugin,
            f"{url}?table=people&where=id < %s",
            {"params": [5], "purge_binary_logs": "sometimes"},
            purge=False,
        )


def test_plan_without_binlog_privilege(binlog_database):
    # A user who may delete rows but not list the binary log files still
    # gets a plan, with the residue named.
    url, port = binlog_database
    fill(url, port, rows=3)
    database = url.rsplit("/", 1)[1]
    user = f"lethe_{secrets.token_hex(3)}"
    with mysql_admin(port=port) as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1'")
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'")
    try:
        run = run_plugin(
            MySQLPlugin,
            f"mysql://{user}@127.0.0.1:{port}/{database}?table=people&where=id = %s",
            {"params": [1]},
            purge=False,
        )
    finally:
        with mysql_admin(port=port) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")

    residual = " ".join(run.info.residual)
    assert "the binary log is on (files not listed" in residual
