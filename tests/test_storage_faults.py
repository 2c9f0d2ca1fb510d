"""The database's storage failing: read-only paths, a full disk, a damaged page.

The full-disk and read-only cases need a filesystem the test owns: a small tmpfs
mounted under the test's HOME (root or CAP_SYS_ADMIN; skipped with the reason
otherwise, except where plain file permissions can stand in for it). Mounts are
always unmounted, and the daemon stopped first, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from peersd import protocol as p
from peersd.errors import Code, PeersError

from .conftest import register

ROOT = os.geteuid() == 0


class Tmpfs:
    """A size-limited tmpfs at ``path``, mounted on demand, always unmounted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self, size: str = "2m", ro: bool = False) -> Path:
        self.path.mkdir(exist_ok=True)
        opts = f"size={size},mode=0700" + (",ro" if ro else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr}")
        self.mounted = True
        return self.path

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def unmount(self) -> None:
        if not self.mounted:
            return
        for _ in range(50):
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode == 0:
                self.mounted = False
                return
            time.sleep(0.1)
        subprocess.run(["umount", "-l", str(self.path)], check=False)  # never leave it behind
        self.mounted = False


@pytest.fixture
def disk(home: Path) -> Iterator[Tmpfs]:
    """Request it before ``make_daemon``: its teardown (unmount) then runs after the
    daemons are stopped, and before HOME is removed."""
    fs = Tmpfs(home / "disk")
    try:
        yield fs
    finally:
        fs.unmount()


def start_fails(d, *needles: str) -> str:
    d.start(wait=False)
    assert d.proc.wait(15) == 1, d.log()
    log = d.log()
    for needle in needles:
        assert needle in log, log
    assert "Traceback" not in log, log
    return log


# --------------------------------------------------------------------------- read-only


def test_read_only_database_directory_is_a_clear_error_at_start(disk, make_daemon, home):
    if ROOT:  # root ignores permission bits: a read-only filesystem is the real thing
        folder = disk.mount(ro=True)
        reason = "Read-only file system"
    else:
        folder = home / "ro"
        folder.mkdir(mode=0o500)
        reason = "Permission denied"
    d = make_daemon(start=False, db=str(folder / "peers.db"))
    start_fails(d, f"cannot open database {folder / 'peers.db'}", reason)


def test_read_only_database_file_is_a_clear_error_at_start(disk, make_daemon, home, agents):
    folder = disk.mount() if ROOT else home / "data"
    folder.mkdir(exist_ok=True)
    db = folder / "peers.db"
    d = make_daemon(db=str(db))
    with d.client() as c:
        register(c, agents.spawn().pid, name="before")
    assert d.stop() == 0
    if ROOT:
        disk.remount("ro")
        reason = "Read-only file system"
    else:
        db.chmod(0o400)
        reason = "Permission denied"
    start_fails(d, f"cannot open database {db}", reason)
    if ROOT:
        disk.remount("rw")
    else:
        db.chmod(0o600)
    d.start()  # writable again: everything is still there
    with d.client() as c:
        (peer,) = c.request(p.ListPeers, include_gone=True).peers
        assert peer.name == "before"


# --------------------------------------------------------------------------- disk full


def test_disk_full_fails_the_request_not_the_daemon(disk, make_daemon, agents):
    folder = disk.mount(size="2m")
    d = make_daemon(db=str(folder / "peers.db"), rate_per_second=0, queue_limit=100_000)
    text = "full disk " + "z" * 3000
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="writer")
        reader_agent = agents.spawn().pid
        register(cb, reader_agent, name="reader")
        ids: list[str] = []
        failure = None
        for i in range(5000):
            try:
                ids.append(ca.request(p.Send, to="reader", text=f"{i}:{text}").message_id)
            except PeersError as e:
                failure = (i, e)
                break
        assert failure is not None, "the 2 MiB disk never filled up"
        n_failed, err = failure
        assert err.code == Code.STORAGE, err
        assert "database or disk is full" in err.message
        assert len(ids) > 100
        # More writes fail the same way; the connection and the daemon carry on. (As large
        # as the one that failed: a smaller one may fit where its uncommitted WAL frames were.)
        for _ in range(3):
            with pytest.raises(PeersError) as again:
                ca.request(p.Send, to="reader", text=f"{n_failed}:{text}")
            assert again.value.code == Code.STORAGE
        with pytest.raises(PeersError) as claim_err:
            cb.request(p.Claim)
        assert claim_err.value.code == Code.STORAGE  # a claim writes (the lease)
        # Reads are served: every id returned so far is there, and nothing more.
        st = cb.request(p.Status)
        assert st.messages["queued"] == len(ids)
        items = cb.request(p.MessageStatus, message_ids=ids).items
        assert all(x.found and x.state == "queued" for x in items)
        page = cb.request(p.History, limit=5)
        assert [m.id for m in page.messages] == ids[::-1][:5]
        assert cb.request(p.Whoami).peer.pending == len(ids)
        # Space comes back while it runs: writes work again, no restart needed.
        disk.remount("size=16m")
        late = ca.request(p.Send, to="reader", text="after the disk was freed").message_id
        ids.append(late)
    # A crash now, then a restart: every id ever returned is still there, once.
    d.kill9()
    d.start()
    with d.client() as c:
        register(c, reader_agent)
        items = c.request(p.MessageStatus, message_ids=ids).items
        assert [x.message_id for x in items if not x.found] == []
        got: list[p.Message] = []
        while batch := c.request(p.Claim, limit=1000).messages:
            got += batch
            c.request(p.Ack, message_ids=[m.id for m in batch], via="cli")
    assert [m.id for m in got] == ids
    assert [m.text for m in got[:-1]] == [f"{i}:{text}" for i in range(len(ids) - 1)]
    assert all(not m.text.startswith(f"{n_failed}:") for m in got), "a failed send was stored"
    assert "database or disk is full" in d.log()
    assert "Traceback" not in d.log()


def test_disk_full_at_the_first_write_after_start(disk, make_daemon, agents, home):
    """A daemon started on a disk that is already full: it starts, says so per request."""
    folder = disk.mount(size="2m")
    d = make_daemon(db=str(folder / "peers.db"))
    assert d.stop() == 0
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    d.start()
    with d.client() as c:
        with pytest.raises(PeersError) as err:
            register(c, agents.spawn().pid, name="nospace")
        assert err.value.code == Code.STORAGE and "full" in err.value.message
        assert c.request(p.Status).peers_active == 0
        filler.unlink()
        assert register(c, agents.spawn().pid, name="nospace").name == "nospace"


# --------------------------------------------------------------------------- corruption


def test_a_damaged_page_in_the_middle_is_a_clear_error_at_start(make_daemon, agents):
    """Found here: a damaged page deep in the file went unnoticed at start, and
    requests touching it failed one by one ("database disk image is malformed") on a
    daemon that looked healthy. The daemon now runs SQLite's quick_check at start."""
    d = make_daemon(rate_per_second=0, queue_limit=100_000)
    with d.client() as ca, d.client() as cb:
        register(ca, agents.spawn().pid, name="a")
        register(cb, agents.spawn().pid, name="b")
        for i in range(2000):
            ca.request(p.Send, to="b", text=f"{i} " + "y" * 200)
    assert d.stop() == 0  # checkpointed: everything is in the main file
    db = d.settings.db_path
    pages = db.stat().st_size // 1024
    assert pages > 200
    with open(db, "r+b") as f:
        f.seek(pages // 2 * 1024)
        f.write(os.urandom(1024))
    log = start_fails(d, f"database {db} is corrupt", "move it aside")
    assert "btreeInitPage" in log or "malformed" in log or "wrong # of entries" in log
    # Moved aside, the daemon starts afresh, and the old file is left for recovery.
    aside = db.with_suffix(".db.corrupt")
    db.rename(aside)
    d.start()
    with d.client() as c:
        assert c.request(p.Status).messages["queued"] == 0
    assert aside.exists()


def test_quick_check_finds_nothing_wrong_with_a_healthy_database(daemon):
    """The start-up check must not refuse a good file (it runs on every start)."""
    with daemon.client() as c:
        c.request(p.Status)
    assert daemon.stop() == 0
    conn = apsw.Connection(str(daemon.settings.db_path))
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    conn.close()
    daemon.start()
    assert daemon.stop(signal.SIGTERM) == 0
