#!/usr/bin/env bash
# Install the real Claude Code and Codex CLIs from npm into a cache directory, once.
#
#   tests/e2e/install_clients.sh CACHE_DIR CLAUDE_CODE_VERSION CODEX_VERSION
#
# Prints the two binaries' paths on success. A marker file names the versions it
# installed, so later runs (and the rest of a pytest run) reuse the cache. Exits 3 when
# npm is missing, and with npm's status when the installation fails (e.g. no network).
set -euo pipefail

cache=${1:?cache dir}
claude_version=${2:?Claude Code version}
codex_version=${3:?Codex version}
marker="$cache/installed-claude-code-$claude_version-codex-$codex_version"
claude="$cache/node_modules/.bin/claude"
codex="$cache/node_modules/.bin/codex"

mkdir -p "$cache"
exec 9>"$cache/.install.lock"
flock 9  # one installer at a time (parallel pytest runs share the cache)

if [ -e "$marker" ] && [ -x "$claude" ] && [ -x "$codex" ]; then
    echo "$claude"
    echo "$codex"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "npm is not installed" >&2
    exit 3
fi

rm -f "$cache"/installed-*
# Both packages ship their native binary in a platform package (an optional dependency).
# Few, short retries: without a registry this fails in seconds rather than minutes.
npm install --prefix "$cache" --no-audit --no-fund --no-update-notifier --loglevel=error \
    --prefer-offline --fetch-retries=1 --fetch-retry-mintimeout=2000 \
    --fetch-retry-maxtimeout=5000 --fetch-timeout=60000 \
    "@anthropic-ai/claude-code@$claude_version" "@openai/codex@$codex_version" >&2

"$claude" --version >&2
"$codex" --version >&2
touch "$marker"
echo "$claude"
echo "$codex"
