"""Stands in for a Claude Code or Codex process in tests.

Run through a link named ``claude`` or ``codex`` (the name is what the MCP server looks
for in its ancestry): ``claude fake_agent.py [agent flags…] -- command…``. It starts the
command through a shell (a wrapper in between, as `uv run` would be), passes its own
stdin and stdout through, and waits for it: the command's parent's parent is the agent.
"""

import subprocess
import sys

argv = sys.argv[1:]
split = argv.index("--")
command = argv[split + 1 :]
quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in command)
sys.exit(subprocess.call(["/bin/sh", "-c", f"{quoted}; exit $?"]))
