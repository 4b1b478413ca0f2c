#!/usr/bin/env bash
# Install everything e3backup needs on a fresh Debian 12 machine, then run one job:
#   scripts/bootstrap.sh demo    a control server + enrolled local agent on embedded defaults
#                                (SQLite, a local repository) and a first backup (quickstart)
#   scripts/bootstrap.sh test    lint, type check and the whole test suite
# System packages come from apt-get (only the missing ones are installed), Python packages go
# into ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

job="${1:-demo}"
# Debian packages the test suite needs (the benchmarks install restic/borg themselves).
APT_PACKAGES=(
    ca-certificates qemu-utils qemu-system-x86 qemu-system-common qemu-guest-agent
    busybox-static linux-image-cloud-amd64 e2fsprogs cpio postgresql
    chromium  # web UI tests (Playwright drives Debian's browser)
    lvm2      # real volume groups on loop devices (no device-mapper here: no activation)
    ntfs-3g gdisk fdisk  # NTFS volumes and GPT/MBR disks standing in for Windows sources
)
# Debian's own python3 needs python3-venv for `python3 -m venv`; other Pythons bring it.
python3 -c "import ensurepip" 2>/dev/null || APT_PACKAGES+=(python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

case "$job" in
    demo)
        exec .venv/bin/e3backup quickstart
        ;;
    test)
        # Tests that need a real server or tool fail instead of skipping when it is missing.
        export E3BACKUP_REQUIRE_REAL=1
        .venv/bin/ruff check src tests bench
        .venv/bin/ruff format --check src tests bench
        .venv/bin/mypy
        # Two workers: most tests wait on subprocesses (CLI, servers, QEMU); every worker starts
        # its own session fixtures (SeaweedFS, PostgreSQL, guest image) on free ports in its own
        # temp dirs. worksteal keeps both busy until the end, whatever the tests' lengths.
        # Plain `pytest` (no -n) still runs one file or test in-process for developers.
        exec .venv/bin/pytest -q -n "${E3BACKUP_TEST_WORKERS:-2}" --dist worksteal
        ;;
    *)
        echo "usage: $0 demo|test" >&2
        exit 2
        ;;
esac
