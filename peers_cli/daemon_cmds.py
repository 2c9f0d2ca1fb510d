"""``peers daemon status|run|start|stop|restart`` and ``peers hub forget-machine|machines``:
running and inspecting peersd itself (``daemon_status`` also backs ``peers status``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from peersd import protocol as p
from peersd.client import Client, running_status, shutdown_and_wait

from .common import (
    EXIT_FAILED,
    JsonOpt,
    ago,
    clock,
    connect,
    die,
    emit_json,
    errors,
    out,
    safe,
    settings,
)

daemon_app = typer.Typer(
    help="Run, start, stop or inspect the peersd daemon.", no_args_is_help=True
)
hub_app = typer.Typer(help="Manage a hub (peersd with a TCP listener).", no_args_is_help=True)


def _status_or_none() -> p.DaemonStatus | None:
    return running_status(settings())


def daemon_status(as_json: bool) -> None:
    with errors():
        st = _status_or_none()
    s = settings()
    from . import service

    notes = [] if as_json else service.status_notes(s, st)  # --json has the service record
    if st is None:
        if as_json:
            record: dict[str, Any] = {"running": False, "socket": s.socket, "db": s.db}
            if svc := service.installed_json(s):
                record["service"] = svc
            emit_json(record)
        else:
            out.print(f"peersd is not running (socket {s.socket})")
            for note in notes:
                out.print(f"  {safe(note)}")
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        record = msgspec.to_builtins(st)
        record.pop("id", None)
        record["running"] = True
        record["uptime"] = time.time() - st.started_at
        record["supervised_by"] = service.supervisor_label(st)
        if svc := service.installed_json(s):
            record["service"] = svc
        emit_json(record)
        return
    queued = st.messages.get("queued", 0) + st.messages.get("leased", 0)
    out.print(f"peersd {st.version} running, pid {st.pid}, up {ago(st.started_at)[:-4]}")
    out.print(f"  supervised by  {safe(service.supervisor_label(st))}")
    for note in notes:
        out.print(f"  note: {safe(note)}")
    for warning in st.warnings:
        out.print(f"  [bold yellow]warning:[/] {safe(warning)}")
    out.print(f"  socket         {st.socket}")
    out.print(f"  database       {st.db} (schema v{st.schema})")
    out.print(f"  host           {st.host} ({st.machine_id})")
    out.print(f"  peers          {st.peers_active} active, {st.peers_gone} gone")
    out.print(f"  connections    {st.connections}")
    out.print(
        f"  messages       {queued} waiting, {st.messages.get('delivered', 0)} delivered, "
        f"{st.messages.get('expired', 0)} expired"
    )
    fed = st.federation
    if fed is not None:
        link = "connected" if fed.connected else f"NOT connected ({fed.error})"
        out.print(
            f"  federation     {safe(fed.node)} on {safe(', '.join(fed.servers))}: {safe(link)}; "
            f"{fed.machines} other machine(s), {fed.outbox} in the outbox"
        )


@hub_app.command("forget-machine")
def hub_forget_machine(
    machine_id: Annotated[str, typer.Argument(help="The machine id the hub refused.")],
) -> None:
    """Unbind a remote machine id from its secret, so that the next client to use it binds
    its own (for a machine that lost its secret). Run on the hub, over its local socket."""
    with errors(), connect(autostart=False) as client:
        client.request(p.ForgetMachine, machine_id=machine_id)
    out.print(f"forgot machine {safe(machine_id)}: the next client to use it binds its secret")


@hub_app.command("machines")
def hub_machines(as_json: JsonOpt = False) -> None:
    """The remote machine ids bound to a secret on this hub, with when each was first and
    last seen: check them, and forget the ones you do not recognise. Run on the hub."""
    with errors(), connect(autostart=False) as client:
        page = client.request(p.ListMachines)
    if as_json:
        emit_json({"machines": page.machines, "total": page.total})
        return
    if not page.machines:
        out.print("No remote machine is bound to this hub.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("MACHINE", "HOST", "PEERS", "FIRST SEEN", "LAST SEEN"):
        table.add_column(col, no_wrap=True, overflow="fold")
    for m in page.machines:
        table.add_row(
            safe(m.machine_id),
            safe(m.host or "-"),
            str(m.active_peers),
            clock(m.first_seen),
            ago(m.last_seen),
        )
    out.print(table)
    if page.total > len(page.machines):
        out.print(f"{page.total - len(page.machines)} more not shown (least recently seen)")


@daemon_app.command("status")
def daemon_status_cmd(as_json: JsonOpt = False) -> None:
    """Who runs the daemon, its pid, uptime and version."""
    daemon_status(as_json)


@daemon_app.command("run")
def daemon_run() -> None:
    """Run peersd in the foreground (as a supervisor would)."""
    from peersd.lifecycle import run

    raise typer.Exit(run(settings()))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@daemon_app.command("start")
def daemon_start() -> None:
    """Start peersd in the background unless it is already running."""
    with errors():
        st = _status_or_none()
        if st is not None:
            out.print(f"peersd is already running (pid {st.pid})")
            return
        from peersd.autostart import installed_supervisor

        supervisor = installed_supervisor(settings())
        if supervisor is not None:
            # A service owns the socket: start it there, never a competing daemon.
            _run_start(supervisor.start)
            if not _wait(lambda: _status_or_none() is not None, 10):
                die(f"started the {supervisor.kind} service but peersd does not answer")
            st = _status_or_none()
            assert st is not None
            out.print(f"peersd {st.version} started by {supervisor.kind} (pid {st.pid})")
            return
        with Client(settings(), kind="cli", autostart=True) as client:
            st = client.request(p.Status)
    out.print(f"peersd {st.version} started (pid {st.pid}); log: {settings().daemon_log_path}")


def _run_start(command: str) -> None:
    import shlex
    import subprocess

    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        die(f"could not run `{command}`: {e}")
    if done.returncode != 0:
        die(f"`{command}` failed: {(done.stderr or done.stdout).strip()}")


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the running peersd cleanly (mail in flight is finished first)."""
    with errors():
        st = _status_or_none()
        if st is None:
            out.print("peersd is not running")
            return
        if not shutdown_and_wait(settings(), st, 10):
            die(f"peersd (pid {st.pid}) did not stop within 10s")
    out.print(f"peersd stopped (was pid {st.pid})")
    if st.supervisor == "systemd":
        out.print(
            "note: systemd starts it again on the next connection; "
            "use `systemctl --user stop claude-peers.socket` to keep it down"
        )


@daemon_app.command("restart")
def daemon_restart() -> None:
    """Stop peersd if it runs, then start it again."""
    daemon_stop()
    daemon_start()
