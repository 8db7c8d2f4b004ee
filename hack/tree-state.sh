#!/usr/bin/env bash
# tree-state.sh: prints a fingerprint of the work tree (tracked changes and
# untracked files, with their contents), so that `make check-generate` can tell
# whether generation changed anything even in a tree with uncommitted work.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  git diff HEAD --binary
  git ls-files --others --exclude-standard -z | xargs -0 -r sha256sum
} | sha256sum
