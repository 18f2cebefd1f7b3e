#!/usr/bin/env bash
# Proto checks: `buf lint` of proto/ (rules in proto/buf.yaml), and `buf breaking` of proto/
# against the commit named in proto/BREAKING_BASE (category WIRE_JSON). buf is the npm package
# pinned in .ci/buf/package-lock.json, installed into .ci/buf/node_modules on first use.
# BUF_ERROR_FORMAT picks buf's --error-format (default: text; e.g. github-actions, json).
set -euo pipefail
cd "$(dirname "$0")/.."

buf=.ci/buf/node_modules/.bin/buf
want=$(node -p 'require("./.ci/buf/package-lock.json").packages["node_modules/@bufbuild/buf"].version')
have=$("$buf" --version 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "== npm ci (buf $want${have:+, found $have})"
  npm ci --prefix .ci/buf --no-audit --no-fund
  have=$("$buf" --version)
  if [ "$have" != "$want" ]; then
    echo "FAIL: npm ci installed buf $have, the lock file pins $want" >&2
    exit 1
  fi
fi
format=${BUF_ERROR_FORMAT:-text}

echo "== buf lint proto (buf $have)"
"$buf" lint proto --error-format "$format"

# The base is the first line of proto/BREAKING_BASE that is not a comment.
base=$(grep -v '^[[:space:]]*#' proto/BREAKING_BASE | grep -m1 -v '^[[:space:]]*$' | tr -d '[:space:]' || true)
if ! [[ $base =~ ^[0-9a-f]{40}$ ]]; then
  echo "FAIL: proto/BREAKING_BASE must name a commit by its full 40-hex id, found '$base'" >&2
  exit 1
fi
if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
  echo "FAIL: the breaking-change base $base (proto/BREAKING_BASE) is not in this clone." >&2
  echo "      In a shallow clone, fetch it: git fetch origin $base (or git fetch --unshallow)." >&2
  exit 1
fi
# The base's proto/ is taken out with git archive rather than given to buf as
# `.git#ref=...,subdir=proto`: that works the same in a plain clone and in a worktree (where .git
# is a file), and reads one tree instead of cloning the repository.
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$base" proto | tar -x -C "$against"

echo "== buf breaking proto --against ${base:0:12} (proto/BREAKING_BASE)"
"$buf" breaking proto --against "$against/proto" --error-format "$format"
echo "buf: lint and breaking checks passed"
