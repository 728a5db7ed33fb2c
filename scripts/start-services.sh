#!/usr/bin/env bash
# Make sure the PostgreSQL and MariaDB servers on 127.0.0.1 are up. On this
# project's machines they are started before the session; this restarts one
# that has stopped. The emulators (moto, GCS, Azurite) are started by the
# test session itself on free loopback ports.
set -euo pipefail

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if command -v mariadb-admin >/dev/null && ! mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 30); do
        mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1 && break
        sleep 1
    done
fi
