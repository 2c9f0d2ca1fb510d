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
import sys
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
        # More writes of that size fail the same way; the connection and the daemon carry
        # on. (A smaller one may still fit in what is left: how much that is depends on the
        # schema's page layout.)
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


# --------------------------------------------------------------------------- planted files
# Another user (uid 65534 here) who can write into the database's directory, or did once,
# plants links and files under the names peersd is about to use. The victim is a file of
# the daemon's own user (think ~/.bashrc): it must come out untouched, and peersd must
# refuse with a message that says what to remove, never a traceback.

OTHER = 65534
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to make files of another uid")


def victim_file(home: Path) -> Path:
    victim = home / "bashrc"
    victim.write_text("export PATH=$HOME/bin:$PATH\n")
    victim.chmod(0o644)
    return victim


def untouched(victim: Path) -> bool:
    st = victim.stat()
    return victim.read_text() == "export PATH=$HOME/bin:$PATH\n" and st.st_mode & 0o777 == 0o644


def plant_link(link: Path, target: Path) -> None:
    os.symlink(target, link)
    os.lchown(link, OTHER, OTHER)


def start_predictably(d, plant: str) -> None:
    """Start the daemon after ``plant`` (Python code, ``pid`` = the daemon's pid) has run
    in the very process that then becomes peersd: an attacker who guessed the pid."""
    d.log_path = d.home / f"peersd-{len(d.logs)}.log"
    d.logs.append(d.log_path)
    code = (
        f"import os, sys\npid = os.getpid()\n{plant}\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'peersd'])\n"
    )
    with open(d.log_path, "wb") as log:
        d.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=d.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )


@needs_root
@pytest.mark.parametrize("shared", [False, True], ids=["own-directory", "shared-directory"])
def test_machine_id_temp_file_never_follows_a_planted_link(make_daemon, home, shared):
    """Found: the new machine id went to ``claude-peers.tmp<pid>`` beside the database,
    written through whatever link sat there, so a user who guessed the daemon's pid
    overwrote the owner's ~/.bashrc. Now a directory others can write is refused, and
    the temp file has a random name, made with O_EXCL|O_NOFOLLOW."""
    folder = home / "data"
    folder.mkdir(mode=0o700)
    if shared:
        folder.chmod(0o1777)  # like /tmp
    victim = victim_file(home)
    d = make_daemon(start=False, db=str(folder / "peers.db"))
    start_predictably(
        d,
        f"link = {str(folder)!r} + f'/claude-peers.tmp{{pid}}'\n"
        f"os.symlink({str(victim)!r}, link)\n"
        f"os.lchown(link, {OTHER}, {OTHER})",
    )
    if shared:
        assert d.proc.wait(15) == 1, d.log()
        assert f"directory {folder} can be written by other users (mode 1777)" in d.log()
        assert "Traceback" not in d.log()
    else:
        d.wait_ready()
        with d.client() as c:
            mid = c.request(p.Status).machine_id
        made = folder / "claude-peers.machine-id"
        assert made.read_text() == mid + "\n" and not made.is_symlink()
        assert made.stat().st_mode & 0o777 == 0o600
    assert untouched(victim)


@needs_root
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("another uid's", "is owned by uid 65534, not by you"),
        ("a link", "is a symbolic link; refusing to follow it"),
        ("a fifo", "is not a regular file"),
        ("writable by others", "can be written by other users (mode 666)"),
    ],
)
def test_planted_machine_id_is_refused(make_daemon, home, kind, reason):
    """Found: a machine-id file another user put beside the database was used as is, so
    they chose which machine this daemon is (a FIFO even hung it at start)."""
    d = make_daemon(start=False)
    folder = d.settings.db_path.parent
    folder.mkdir(mode=0o700, parents=True)
    planted = folder / "claude-peers.machine-id"
    theirs = "6f1d3c1e-0000-4000-8000-000000065534\n"
    if kind == "another uid's":
        planted.write_text(theirs)
        os.chown(planted, OTHER, OTHER)
    elif kind == "a link":
        (home / "theirs").write_text(theirs)
        plant_link(planted, home / "theirs")
    elif kind == "a fifo":
        os.mkfifo(planted, 0o600)
    else:
        planted.write_text(theirs)
        planted.chmod(0o666)
    start_fails(
        d,
        f"machine-id file {planted} {reason}",
        "refusing to use it" if kind != "a link" else "Remove the link",
    )


def test_a_machine_id_file_readable_by_others_is_still_ours(make_daemon, home):
    """What must not be refused: a 0644 machine-id file of ours (clients with umask 022
    made those before), and no other mode is forced on it."""
    d = make_daemon(start=False)
    folder = d.settings.db_path.parent
    folder.mkdir(mode=0o755, parents=True)
    mine = folder / "claude-peers.machine-id"
    mine.write_text("6f1d3c1e-0000-4000-8000-00000000a11c\n")
    mine.chmod(0o644)
    d.start()
    with d.client() as c:
        assert c.request(p.Status).machine_id == "6f1d3c1e-0000-4000-8000-00000000a11c"


@needs_root
@pytest.mark.parametrize(
    "suffix, kind",
    [
        ("", "another uid's"),
        ("", "a link"),
        ("-wal", "another uid's"),
        ("-wal", "a link"),
        ("-shm", "a link"),
        ("-journal", "another uid's"),
    ],
)
def test_planted_database_files_are_refused(make_daemon, home, suffix, kind):
    """Found: a ``-wal`` another user made crashed the daemon at start (a traceback from
    chmod), and as root it was used: mail written into their file. A link was followed
    (the ``-shm`` one made the victim 0600). Each is refused now, before SQLite opens."""
    d = make_daemon(start=False)
    db = d.settings.db_path
    db.parent.mkdir(mode=0o700, parents=True)
    planted = Path(f"{db}{suffix}")
    victim = victim_file(home)
    if kind == "a link":
        plant_link(planted, victim)
        reason = "is a symbolic link; refusing to follow it"
    else:
        # An empty database is a new one to SQLite; a journal or WAL holds their bytes.
        planted.write_bytes(b"" if suffix == "" else os.urandom(4096))
        planted.chmod(0o666)
        os.chown(planted, OTHER, OTHER)
        reason = "is owned by uid 65534, not by you"
    start_fails(d, f"{planted} {reason}", "Remove")
    assert untouched(victim)
    if suffix:
        assert not db.exists() or db.stat().st_size == 0  # nothing written beside them


def test_a_leftover_wal_of_our_own_is_recovered_or_ignored(make_daemon, agents):
    """What must not be refused: a ``-wal`` of ours, even garbage (a crash mid-write, a
    bad copy). SQLite ignores what does not check out; everything committed stays."""
    d = make_daemon()
    with d.client() as c:
        register(c, agents.spawn().pid, name="kept")
    assert d.stop() == 0
    wal = Path(f"{d.settings.db_path}-wal")
    wal.write_bytes(os.urandom(8192))
    wal.chmod(0o600)
    d.start()
    with d.client() as c:
        (peer,) = c.request(p.ListPeers, include_gone=True).peers
        assert peer.name == "kept"
    assert "Traceback" not in d.log()


@needs_root
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("another uid's", "is owned by uid 65534, not by you"),
        ("world-writable", "can be written by other users (mode 777)"),
        ("shared like /tmp", "can be written by other users (mode 1777)"),
        ("writable by a shared group", "can be written by other users (mode 770)"),
    ],
)
def test_a_database_directory_others_can_write_is_refused(make_daemon, home, kind, reason):
    """The service installer allows paths under /tmp; a database right in a directory
    others can write is refused with what to do, before any file is made there."""
    folder = home / "data"
    folder.mkdir()
    if kind == "another uid's":
        os.chown(folder, OTHER, OTHER)
    elif kind == "world-writable":
        folder.chmod(0o777)
    elif kind == "shared like /tmp":
        folder.chmod(0o1777)
    else:
        folder.chmod(0o770)
        os.chown(folder, 0, OTHER)  # nogroup: not a group of ours alone
    d = make_daemon(start=False, db=str(folder / "peers.db"))
    log = start_fails(d, f"directory {folder} {reason}", "CLAUDE_PEERS_DB")
    assert "refusing" in log
    assert os.listdir(folder) == []


def test_a_database_directory_writable_by_our_own_group_is_fine(make_daemon, home):
    """What must not be refused: ~/.claude made 0775 under umask 002 (Fedora and others
    give each user a group of their own); nor is its mode changed."""
    import grp
    import pwd

    me = pwd.getpwuid(os.getuid())
    if grp.getgrgid(me.pw_gid).gr_name != me.pw_name or set(grp.getgrgid(me.pw_gid).gr_mem) - {
        me.pw_name
    }:
        pytest.skip("this user has no private group")
    folder = home / "data"
    folder.mkdir()
    folder.chmod(0o775)
    os.chown(folder, os.getuid(), me.pw_gid)
    d = make_daemon(db=str(folder / "peers.db"))
    with d.client() as c:
        c.request(p.Status)
    assert folder.stat().st_mode & 0o777 == 0o775
