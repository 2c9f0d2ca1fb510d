"""Wire agent clients (Claude Code, Codex, Gemini CLI, Cursor CLI, Copilot CLI, opencode,
Antigravity CLI) to claude-peers.

``install`` registers the ``peers-mcp`` stdio server and the ``peers-hook`` hooks in the
client's own config files; ``uninstall`` removes exactly those entries; ``doctor``
checks the daemon, the files it owns and both clients' wiring. The ``peers install``,
``peers uninstall`` and ``peers doctor`` commands in ``peers_cli.app`` are thin wrappers
around :func:`install_claude`, :func:`install_codex`, :func:`uninstall_claude`,
:func:`uninstall_codex` and :func:`doctor`.

The modules: ``common`` (names, paths, our console scripts, settings pins), ``edits``
(reading files, planning steps, reports, backups and atomic writes), ``hooks`` (our
hooks in a JSON hooks file), ``claude``, ``codex``, ``gemini``, ``cursor``, ``copilot``,
``opencode`` and ``antigravity`` (one client each) and ``doctor``.

Rules every edit follows:

- Everything of the user's stays: other servers, other hooks, other settings, TOML
  comments and key order. Ours are recognised by their command: an executable named
  ``peers-mcp`` (MCP servers), or for hooks ``peers-hook`` or the ``python -I -S -c``
  launcher of ``peers_mcp.hook`` (``common.hook_launcher``), wherever it lives.
- Idempotent: a second run finds everything in place and writes nothing.
- Before a file's first change in a run it is copied to ``<file>.bak-YYYYmmdd-HHMMSS``.
- Writes are atomic (temporary file, then rename) and keep the file's mode; a symlinked
  file (dotfile managers) is written through the link.
- Paths are absolute: the console scripts next to the running Python, else on PATH; the
  hook runs as this interpreter with ``-I -S`` and the package path spelled out.
- A dry run computes the same plan and writes nothing.

Claude Code reads its user-scope MCP servers from ``~/.claude.json`` (top-level
``mcpServers``) and its hooks from ``~/.claude/settings.json``; with
``CLAUDE_CONFIG_DIR`` set, both live in that directory. When a ``claude`` binary is on
PATH the server is registered through ``claude mcp add/remove --scope user`` (which is
safe while Claude Code runs and rewrites that file); otherwise the file is edited.
Whether an entry is already there is read from the file itself: ``claude mcp get``
would start the server to report its health, and its output is not meant for parsing.

Codex reads ``$CODEX_HOME/config.toml`` (``[mcp_servers.<name>]``, ``[features]``) and
``$CODEX_HOME/hooks.json``, with ``CODEX_HOME`` defaulting to ``~/.codex``. Codex starts
MCP servers with a cleared environment, so a socket, database or config file that
differs from what HOME alone gives is pinned in the entry's ``env`` table.
"""

from __future__ import annotations

from .antigravity import install_antigravity, uninstall_antigravity
from .claude import install_claude, uninstall_claude
from .codex import install_codex, uninstall_codex
from .common import SERVER_NAME, InstallError, Paths, env_pins, find_script
from .copilot import install_copilot, uninstall_copilot
from .cursor import install_cursor, uninstall_cursor
from .doctor import Check, doctor
from .edits import Change, Report
from .gemini import install_gemini, uninstall_gemini
from .opencode import install_opencode, uninstall_opencode

__all__ = [
    "SERVER_NAME",
    "Change",
    "Check",
    "InstallError",
    "Paths",
    "Report",
    "doctor",
    "env_pins",
    "find_script",
    "install_antigravity",
    "install_claude",
    "install_codex",
    "install_copilot",
    "install_cursor",
    "install_gemini",
    "install_opencode",
    "uninstall_antigravity",
    "uninstall_claude",
    "uninstall_codex",
    "uninstall_copilot",
    "uninstall_cursor",
    "uninstall_gemini",
    "uninstall_opencode",
]
