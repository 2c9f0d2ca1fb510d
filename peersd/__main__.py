"""``peersd``: run the daemon in the foreground (what supervisors and auto-start exec)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import __version__
from .config import ConfigError, Settings, load


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="peersd",
        description="The claude-peers daemon: peers, mailboxes and delivery for AI coding "
        "agents on this machine. Runs in the foreground; logs go to stderr.",
    )
    ap.add_argument("--socket", help="Unix socket path (env CLAUDE_PEERS_SOCKET)")
    ap.add_argument("--db", help="SQLite database path (env CLAUDE_PEERS_DB)")
    ap.add_argument("--config", help="config file (env CLAUDE_PEERS_CONFIG)")
    ap.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )
    ap.add_argument(
        "--detach",
        action="store_true",
        help="start a daemon in the background (own session, logs to the run directory) "
        "and return at once",
    )
    ap.add_argument("--version", action="version", version=f"peersd {__version__}")
    return ap


def overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "socket": args.socket,
        "db": args.db,
        "config": args.config,
        "log_level": args.log_level,
    }


def detach(settings: Settings) -> int:
    """Start ``peersd`` in a new session with stdio detached; do not wait for it."""
    from .private_files import ensure_private_dir

    ensure_private_dir(settings.run_dir)
    log_path = settings.daemon_log_path
    env = dict(os.environ)
    env["CLAUDE_PEERS_AUTOSTARTED"] = "1"
    args = [sys.executable, "-m", "peersd", "--socket", settings.socket, "--db", settings.db]
    if os.path.exists(settings.config):
        args += ["--config", settings.config]
    args += ["--log-level", settings.log_level]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd="/",
        )
    finally:
        os.close(fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load(overrides(args))
    except ConfigError as e:
        print(f"peersd: {e}", file=sys.stderr)
        return 2
    if args.detach:
        try:
            return detach(settings)
        except (ConfigError, OSError) as e:
            print(f"peersd: cannot start in the background: {e}", file=sys.stderr)
            return 1
    from .lifecycle import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
