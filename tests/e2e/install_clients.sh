#!/usr/bin/env bash
# Install the real Claude Code and Codex CLIs from npm into a cache directory, once.
#
#   tests/e2e/install_clients.sh CACHE_DIR CLAUDE_CODE_VERSION CODEX_VERSION
#   tests/e2e/install_clients.sh --gemini CACHE_DIR GEMINI_CLI_VERSION
#   tests/e2e/install_clients.sh --opencode CACHE_DIR OPENCODE_VERSION
#   tests/e2e/install_clients.sh --copilot CACHE_DIR COPILOT_CLI_VERSION
#
# Prints the two binaries' paths on success (with --gemini: the real Gemini CLI, into
# CACHE_DIR/gemini, its own npm prefix, and that one binary's path; --opencode likewise,
# opencode-ai into CACHE_DIR/opencode, @github/copilot into CACHE_DIR/copilot). A marker file names the versions it
# installed, so later runs (and the rest of a pytest run) reuse the cache. Exits 3 when
# npm is missing, and with npm's status when the installation fails (e.g. no network).
set -euo pipefail

npm_install() {
    # Few, short retries: without a registry this fails in seconds rather than minutes.
    npm install --prefix "$1" --no-audit --no-fund --no-update-notifier --loglevel=error \
        --prefer-offline --fetch-retries=1 --fetch-retry-mintimeout=2000 \
        --fetch-retry-maxtimeout=5000 --fetch-timeout=60000 "${@:2}" >&2
}

if [ "${1:-}" = "--gemini" ]; then
    prefix=${2:?cache dir}/gemini
    version=${3:?Gemini CLI version}
    marker="$prefix/installed-gemini-cli-$version"
    gemini="$prefix/node_modules/.bin/gemini"
    mkdir -p "$prefix"
    exec 9>"$prefix/.install.lock"
    flock 9
    if [ -e "$marker" ] && [ -x "$gemini" ]; then
        echo "$gemini"
        exit 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm is not installed" >&2
        exit 3
    fi
    rm -f "$prefix"/installed-*
    npm_install "$prefix" "@google/gemini-cli@$version"
    "$gemini" --version >&2
    touch "$marker"
    echo "$gemini"
    exit 0
fi

if [ "${1:-}" = "--opencode" ] || [ "${1:-}" = "--copilot" ]; then
    name=${1#--}
    package=opencode-ai tag=opencode-ai
    if [ "$name" = copilot ]; then package=@github/copilot tag=github-copilot; fi
    prefix=${2:?cache dir}/$name
    version=${3:?version}
    marker="$prefix/installed-$tag-$version"
    binary="$prefix/node_modules/.bin/$name"
    mkdir -p "$prefix"
    exec 9>"$prefix/.install.lock"
    flock 9
    if [ -e "$marker" ] && [ -x "$binary" ]; then
        echo "$binary"
        exit 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm is not installed" >&2
        exit 3
    fi
    rm -f "$prefix"/installed-*
    # Both ship their native binary in a platform package (an optional dependency).
    npm_install "$prefix" "$package@$version"
    "$binary" --version >&2
    touch "$marker"
    echo "$binary"
    exit 0
fi

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
npm_install "$cache" "@anthropic-ai/claude-code@$claude_version" "@openai/codex@$codex_version"

"$claude" --version >&2
"$codex" --version >&2
touch "$marker"
echo "$claude"
echo "$codex"
