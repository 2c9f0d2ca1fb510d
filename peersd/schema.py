"""The database file and its schema: opening it safely, and the migrations in order.

The schema version is SQLite's ``user_version``: migration N brings it to N, each in
its own transaction, so a crash mid-upgrade resumes where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import apsw

from . import files, mailstore, outbox, workstate
from .errors import ConfigError, StoreError
from .private_files import ensure_own_dir, open_own_file

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE peers(
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        client TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'gone')),
        machine_id TEXT NOT NULL,
        host TEXT NOT NULL,
        cwd TEXT NOT NULL,
        agent_pid INTEGER NOT NULL,
        agent_start REAL NOT NULL,
        registered_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        receive TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        git_root TEXT,
        branch TEXT,
        tty TEXT,
        session_id TEXT,
        helper_pid INTEGER,
        gone_at REAL,
        gone_reason TEXT
    );
    CREATE UNIQUE INDEX peers_active_name ON peers(machine_id, name_key) WHERE state = 'active';
    CREATE INDEX peers_agent ON peers(machine_id, agent_pid);
    CREATE INDEX peers_session ON peers(session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX peers_name ON peers(name_key);

    -- Message ids are "m-<tag>-<seq>": the tag is random per database, so an id from
    -- a database that was replaced never names a message of the new one.
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta(key, value) VALUES ('tag', lower(hex(randomblob(3))));

    CREATE TABLE messages(
        seq INTEGER PRIMARY KEY,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        recipient TEXT NOT NULL,
        recipient_name TEXT NOT NULL,
        text TEXT NOT NULL,
        created REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'delivered', 'expired')),
        expires_at REAL NOT NULL,
        reply_to TEXT,
        delivered_at REAL,
        delivered_via TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL
    );
    CREATE INDEX messages_inbox ON messages(recipient, state, seq);
    CREATE INDEX messages_sender ON messages(sender, seq);
    CREATE INDEX messages_done ON messages(delivered_at) WHERE delivered_at IS NOT NULL;

    CREATE TABLE audit(
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # v2: hub clients prove their machine id with a secret; the first secret binds it.
    """
    CREATE TABLE machines(
        machine_id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    """,
]

# Working on the same repository: file activity, claims, peer status (peersd/files.py).
MIGRATIONS.append(files.MIGRATION)

# Delivery health: when each peer last acknowledged mail.
MIGRATIONS.append("ALTER TABLE peers ADD COLUMN last_read REAL;")

# Shared work state: tasks with their history, and the decisions board (peersd/workstate.py).
MIGRATIONS.append(workstate.MIGRATION)
# Groups, proposals and votes (peersd/groups.py, peersd/proposals.py).
MIGRATIONS.append(
    """
    ALTER TABLE peers ADD COLUMN group_name TEXT;

    CREATE TABLE proposals(
        id INTEGER PRIMARY KEY,
        proposer TEXT NOT NULL,
        proposer_name TEXT NOT NULL,
        title TEXT NOT NULL,
        options TEXT NOT NULL,
        threshold TEXT NOT NULL,
        required INTEGER NOT NULL,
        created REAL NOT NULL,
        deadline REAL,
        state TEXT NOT NULL CHECK (state IN ('open', 'decided', 'failed', 'expired')),
        outcome TEXT,
        resolved_at REAL,
        group_name TEXT,
        -- Made by the operator (a CLI peer in no group): seen only by its proposer and
        -- voters, not by everyone of its group (no group), whatever the voters' groups.
        operator INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX proposals_open ON proposals(deadline) WHERE state = 'open';
    CREATE INDEX proposals_created ON proposals(created);
    CREATE INDEX proposals_resolved ON proposals(resolved_at) WHERE resolved_at IS NOT NULL;

    -- One row per voter, made with the proposal; vote stays NULL until cast.
    CREATE TABLE votes(
        proposal INTEGER NOT NULL REFERENCES proposals(id) ON DELETE CASCADE,
        voter TEXT NOT NULL,
        voter_name TEXT NOT NULL,
        vote TEXT,
        reason TEXT NOT NULL DEFAULT '',
        at REAL,
        PRIMARY KEY (proposal, voter)
    ) WITHOUT ROWID;
    CREATE INDEX votes_voter ON votes(voter);
    """
)
# Typed requests, snapshots, threads, reactions and full-text search (peersd/mailstore.py).
MIGRATIONS.append(mailstore.MIGRATION)
# Federation over NATS: the outbox, our mail to other machines, mail from them (peersd/outbox.py).
MIGRATIONS.append(outbox.MIGRATION)


def open_database(path: Path, sync: str) -> apsw.Connection:
    """Open (creating) the database file as only peersd may: owned, exclusive, WAL, checked."""
    # Only we may add files to the directory; a file left from before (or a link of
    # our own) is still never followed, nor used when another uid owns it: SQLite would
    # write our mail into it, or roll a planted journal into the database.
    try:
        ensure_own_dir(path.parent, "db")
        fd = open_own_file(path, "database", create=True)
        if fd is not None:
            os.close(fd)
        for suffix in ("-wal", "-shm", "-journal"):
            fd = open_own_file(Path(f"{path}{suffix}"), "database file")
            if fd is not None:
                os.close(fd)
    except ConfigError as e:
        raise StoreError(str(e)) from None
    except OSError as e:
        raise StoreError(f"cannot open database {path}: {e.strerror}") from None
    try:
        conn = apsw.Connection(str(path))
        conn.set_busy_timeout(5000)
        # Small pages: a send dirties several b-tree pages and each is copied to the
        # WAL on commit, so 1 KiB pages make the common commit several times cheaper.
        conn.pragma("page_size", 1024)
        # Only peersd opens the file: an exclusive lock keeps the WAL index in memory
        # (no lock syscalls per transaction) and keeps everyone else out.
        conn.pragma("locking_mode", "EXCLUSIVE")
        mode = conn.pragma("journal_mode", "wal")
        if mode != "wal":
            raise StoreError(f"database {path}: could not switch to WAL mode (got {mode})")
        conn.pragma("synchronous", "FULL" if sync == "full" else "NORMAL")
        conn.pragma("wal_autocheckpoint", 4000)
        conn.pragma("foreign_keys", True)
        conn.execute("SELECT count(*) FROM sqlite_master").get  # noqa: B018
        # A damaged page in the middle of the file is otherwise found only by the
        # request that reads it; find it now (a full scan: ~80 ms per 100k messages).
        problems = [" ".join(str(r[0]).split()) for r in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StoreError(
                f"database {path} is corrupt ({'; '.join(problems)[:300]}); move it aside "
                "(keep it for recovery) and restart"
            )
    except apsw.BusyError:
        raise StoreError(
            f"database {path} is locked by another process (is another peersd using it?)"
        ) from None
    except apsw.NotADBError:
        raise StoreError(
            f"database {path} is not a SQLite database (corrupt or another file); "
            "move it aside and restart peersd"
        ) from None
    except apsw.CorruptError:
        raise StoreError(
            f"database {path} is corrupt; move it aside (keep it for recovery) and restart"
        ) from None
    except apsw.ReadOnlyError:
        raise StoreError(f"database {path} is read-only; peersd needs to write it") from None
    except apsw.CantOpenError:
        raise StoreError(f"cannot open database {path}") from None
    except apsw.Error as e:
        raise StoreError(f"database {path}: {e}") from None
    return conn


def migrate(conn: apsw.Connection, path: Path) -> None:
    """Bring the schema up to ``MIGRATIONS``, one transaction per step."""
    version = conn.pragma("user_version")
    if version > len(MIGRATIONS):
        raise StoreError(
            f"database {path} has schema v{version}, newer than this peersd knows "
            f"(v{len(MIGRATIONS)}); upgrade claude-peers"
        )
    try:
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with conn:
                conn.execute(script)
                conn.pragma("user_version", number)
    except apsw.Error as e:
        raise StoreError(f"database {path}: migration failed: {e}") from None
