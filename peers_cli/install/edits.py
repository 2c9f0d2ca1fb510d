"""Edits to the clients' files: read them, plan the changes, report and apply them.

An installer reads the files it may change (:func:`read_json`), plans a list of
:class:`Step` objects, and hands them to :func:`execute`, which fills the
:class:`Report` and, unless it is a dry run, backs each file up once and writes it
atomically (or runs the ``claude mcp`` command that changes it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .common import (
    LABELS,
    InstallError,
    entry_matches,
    is_our_server,
    json_servers,
    merged_env,
    tilde,
)

CLAUDE_CLI_TIMEOUT = 60.0
"""How long a step's command (``claude mcp add/remove``) may take before it counts as failed."""


# --------------------------------------------------------------------------- reports


@dataclass
class Change:
    """One entry added, updated or removed, as the report shows it."""

    action: str
    """add, update or remove"""
    item: str
    where: str
    detail: str = ""


@dataclass
class Report:
    """What one install or uninstall did (or would do): for people and for ``--json``."""

    client: str
    """claude, codex, gemini or cursor"""
    operation: str
    """install or uninstall"""
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def label(self) -> str:
        return LABELS[self.client]

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "operation": self.operation,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "changes": [asdict(c) for c in self.changes],
            "commands": self.commands,
            "backups": self.backups,
            "notes": self.notes,
        }

    def summary(self) -> str:
        if not self.changes:
            if self.operation == "install":
                return f"{self.label}: already installed, nothing to change"
            return f"{self.label}: nothing of claude-peers is installed, nothing to remove"
        if self.dry_run:
            return (
                f"{self.label}: would make {len(self.changes)} change(s) (dry run: nothing written)"
            )
        done = "installed" if self.operation == "install" else "uninstalled"
        return f"{self.label}: {done} ({len(self.changes)} change(s))"

    def lines(self) -> list[str]:
        """The report for people, one line each (plain text)."""
        out = [self.summary()]
        verbs = {"add": "added", "update": "updated", "remove": "removed"}
        for c in self.changes:
            verb = f"would {c.action}" if self.dry_run else verbs.get(c.action, c.action)
            detail = f" → {c.detail}" if c.detail else ""
            out.append(f"  {verb:<14} {c.item}{detail}  [{c.where}]")
        for argv in self.commands:
            prefix = "would run" if self.dry_run else "ran"
            out.append(f"  {prefix:<14} {shlex.join(argv)}")
        for path in self.backups:
            out.append(f"  {'backup':<14} {path}")
        out += [f"  note: {n}" for n in self.notes]
        return out


# --------------------------------------------------------------------------- files


@dataclass
class JsonDoc:
    """A JSON file as read, kept with its text so a rewrite keeps its indent and last newline."""

    path: Path
    raw: str | None
    data: dict[str, Any]
    indent: int | str

    @property
    def exists(self) -> bool:
        return self.raw is not None

    def render(self, data: Mapping[str, Any]) -> str:
        text = json.dumps(data, indent=self.indent, ensure_ascii=False)
        if self.raw is None or self.raw.endswith("\n"):
            text += "\n"
        return text


def read_text(path: Path) -> str | None:
    """A file's text, None if it does not exist; an unreadable file is an error, not empty."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(f"cannot read {path}: {e}") from None


def _indent_of(raw: str) -> int | str:
    for line in raw.splitlines()[1:]:
        body = line.lstrip(" \t")
        if body and len(body) < len(line):
            space = line[: len(line) - len(body)]
            return "\t" if space.startswith("\t") else len(space)
    return 2


def read_json(path: Path) -> JsonDoc:
    """A JSON config file (missing or blank: empty); refuses anything but an object."""
    raw = read_text(path)
    if raw is None:
        return JsonDoc(path, None, {}, 2)
    if not raw.strip():
        return JsonDoc(path, raw, {}, 2)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InstallError(
            f"{path} is not valid JSON ({e}); fix it or move it away, then run this again"
        ) from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} does not hold a JSON object; fix it or move it away")
    return JsonDoc(path, raw, data, _indent_of(raw))


def _backup_path(path: Path, stamp: str) -> Path:
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


class Writer:
    """Applies a plan's file writes and commands; backs up each file once first."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.backed_up: set[Path] = set()

    def backup(self, path: Path) -> None:
        if path in self.backed_up:
            return
        self.backed_up.add(path)
        if not path.exists():
            return
        target = _backup_path(path, self.stamp)
        try:
            shutil.copy2(path, target)
            os.chmod(target, 0o600)
        except OSError as e:
            raise InstallError(f"cannot back up {path} to {target}: {e}") from None
        self.report.backups.append(str(target))

    def write(self, path: Path, text: str) -> None:
        self.backup(path)
        real = path.resolve() if path.is_symlink() else path
        try:
            mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else 0o600
            atomic_write(real, text, mode)
        except OSError as e:
            raise InstallError(f"cannot write {path}: {e}") from None

    def delete(self, path: Path) -> None:
        self.backup(path)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise InstallError(f"cannot remove {path}: {e}") from None

    def run(self, argv: list[str]) -> None:
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=CLAUDE_CLI_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InstallError(f"`{shlex.join(argv)}` failed: {e}") from None
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise InstallError(
                f"`{shlex.join(argv)}` exited {done.returncode}"
                + (f": {message[-1]}" if message else "")
            )


# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    """One file to write (``text``) or remove (``text`` None), or one command to run."""

    changes: list[Change]
    path: Path | None = None
    text: str | None = None
    argv: list[str] | None = None
    backup: Path | None = None
    """For a command: the file it will change (backed up first)."""


def check_writable(path: Path) -> None:
    """Refuse a file its mode marks read-only for us: someone made it so on purpose.

    The mode bits are read as the kernel would for a user who is not root, because root
    may write anything (``os.access`` says yes) and the rename would replace it anyway.
    """
    try:
        st = path.stat()  # through a link: the file that would change
    except FileNotFoundError:
        return
    except OSError as e:
        raise InstallError(f"cannot check {path}: {e.strerror}") from None
    if st.st_uid == os.getuid():
        allowed = st.st_mode & stat.S_IWUSR
    elif st.st_gid in (os.getgid(), *os.getgroups()):
        allowed = st.st_mode & stat.S_IWGRP
    else:
        allowed = st.st_mode & stat.S_IWOTH
    if not allowed:
        whose = "" if st.st_uid == os.getuid() else f", owned by uid {st.st_uid}"
        raise InstallError(
            f"{path} is read-only (mode {stat.S_IMODE(st.st_mode):o}{whose}), so nothing was "
            f"changed: make it writable (chmod u+w {path}) and run this again, or leave "
            "it as it is and make the changes by hand (docs/clients.md, Manual setup)"
        )


def execute(report: Report, steps: list[Step]) -> Report:
    """Record every step in ``report``, then (unless a dry run) carry them out in order.

    Every file a step would change is checked first, so a read-only one stops the whole
    plan before anything is written (a dry run says so too). A failure part way names the
    backups made so far, so the user can put things back.
    """
    writer = Writer(report)
    for step in steps:
        report.changes += step.changes
        if step.argv is not None:
            report.commands.append(step.argv)
    for step in steps:
        target = step.backup if step.argv is not None else step.path
        if target is not None:
            check_writable(target)
    if report.dry_run:
        return report
    try:
        for step in steps:
            if step.argv is not None:
                if step.backup is not None:
                    writer.backup(step.backup)
                writer.run(step.argv)
            elif step.path is not None and step.text is not None:
                writer.write(step.path, step.text)
            elif step.path is not None:
                writer.delete(step.path)
    except InstallError as e:
        if report.backups:
            raise InstallError(f"{e} (backups made so far: {', '.join(report.backups)})") from None
        raise
    return report


def json_step(doc: JsonDoc, data: dict[str, Any], changes: list[Change]) -> Step | None:
    """The step that writes ``data`` back to ``doc``'s file; None when nothing changes.

    A file we would leave empty is removed, so uninstall leaves no ``{}`` behind.
    """
    if not changes:
        return None
    if doc.exists and not data:
        return Step(changes, path=doc.path, text=None)  # nothing left: remove the file
    return Step(changes, path=doc.path, text=doc.render(data))


def put_json_server(
    report: Report,
    doc: JsonDoc,
    data: dict[str, Any],
    name: str,
    server: tuple[str, list[str], Mapping[str, str]],
) -> Change | None:
    """Make ``data``'s ``mcpServers.<name>`` run ``server`` (command, args, pins), keeping the
    user's other env keys; what that changes, or None if the entry is already so."""
    command, args, pins = server
    current = json_servers(data, doc.path).get(name)
    if entry_matches(current, command, args, pins):
        return None
    old = current if isinstance(current, Mapping) else {}
    entry: dict[str, Any] = {"command": command, "args": args}
    if server_env := merged_env(old.get("env"), pins):
        entry["env"] = server_env
    data.setdefault("mcpServers", {})[name] = entry
    if current is not None and not is_our_server(current):
        report.notes.append(
            f'"{name}" ran {old.get("command")!r}; it now runs peers-mcp '
            "(the old entry is in the backup)"
        )
    action = "add" if current is None else "update"
    return Change(action, f'MCP server "{name}"', tilde(doc.path), shlex.join([command, *args]))


def drop_json_servers(doc: JsonDoc, data: dict[str, Any]) -> list[Change]:
    """Take every server running ``peers-mcp`` out of ``data``'s ``mcpServers``, whatever
    its name (an empty ``mcpServers`` goes too); what that changes."""
    servers = json_servers(data, doc.path)
    changes = []
    for name in [n for n, entry in servers.items() if is_our_server(entry)]:
        changes.append(
            Change("remove", f'MCP server "{name}"', tilde(doc.path), servers[name]["command"])
        )
        del servers[name]
    if changes and not servers:
        del data["mcpServers"]
    return changes
