#!/usr/bin/env bash
# Install the Debian packages the test suite and benchmarks drive, if missing.
set -euo pipefail

packages=(
    e2fsprogs xfsprogs btrfs-progs util-linux   # filesystems on loop devices
    sleuthkit testdisk                          # forensic checks: fls, icat, photorec
    cryptsetup-bin                              # LUKS crypto-erase
    fdisk nwipe                                 # partition tables in tests; benchmark reference
    sqlite3 age coreutils time                  # benchmarks' reference tools, GNU time for peak RSS
    postgresql-client mariadb-client
    postgresql postgresql-common mariadb-server  # database servers the tests use on 127.0.0.1
    python3-venv                                # make's .venv
    systemd                                     # systemd-analyze verify and security
    chromium                                    # renders the HTML policy report in tests
)

missing=()
# Azurite runs on Node.js. A Node.js from another source may bundle npm, and
# Debian's npm package would conflict with it, so both install only when
# npm is absent.
if ! command -v npm >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; run 'make test' as root or install them with apt-get" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
