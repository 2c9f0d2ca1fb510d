"""A hub client's proof of its machine: a random secret kept in an owner-only file.

A hub binds each remote machine id to the first secret it sees with it and refuses that
id with any other secret, so a token holder cannot speak for another machine (or for
the hub's own). The secret lives in ``<db dir>/claude-peers-private/machine-secret``:
a directory of our own, mode 0700 (a link there is refused), and a file created 0600
by ``private_files.write_private_file`` (the first writer wins a race; a planted,
symlinked or other-readable file is refused, never followed or overwritten). Every
refusal is a ``ConfigError``.

The machine id (``claude-peers.machine-id`` beside the database) is read and made here
too, and ``hub_credentials`` gives both: the one routine the blocking and async clients
(``client``) and the hook's client (``wire``) prove their machine with.

Standard library only, through ``private_files`` (no pathlib, uuid or config): the hook
imports it in hub mode, before every hub call.
"""

import os

from .errors import ConfigError
from .private_files import ensure_own_dir, ensure_private_dir, read_private_file, write_private_file

MACHINE_ID_FILE = "claude-peers.machine-id"
PRIVATE_DIR = "claude-peers-private"
SECRET_FILE = "machine-secret"
SECRET_HEX = 64
"""32 random bytes, written as hex."""
WHAT = "machine secret"


def secret_path(state_dir: str) -> str:
    return os.path.join(state_dir, PRIVATE_DIR, SECRET_FILE)


def _read(path: str) -> str | None:
    """The secret in ``path``, None if there is none; refuses a file that is not ours."""
    raw = read_private_file(path, WHAT, limit=256, secret=True)
    if raw is None:
        return None
    value = raw.decode("ascii", "replace").strip()
    if len(value) != SECRET_HEX or value.strip("0123456789abcdef"):
        raise ConfigError(f"{path} does not hold a machine secret; remove it")
    return value


def load_or_create(state_dir: str) -> str:
    """This machine's hub secret, created on first use."""
    ensure_own_dir(state_dir, "db")
    ensure_private_dir(os.path.join(state_dir, PRIVATE_DIR), "db", follow_links=False)
    path = secret_path(state_dir)
    value = _read(path)
    if value is not None:
        return value
    try:  # noqa: SIM105 - contextlib would be one more import per hook run
        write_private_file(path, (os.urandom(SECRET_HEX // 2).hex() + "\n").encode())
    except FileExistsError:  # a concurrent first writer won: its secret is the secret
        pass
    value = _read(path)
    if value is None:  # pragma: no cover - removed between link and read
        raise ConfigError(f"{path} vanished while it was created")
    return value


def _new_machine_id() -> str:
    """A random (version 4) UUID as text, without importing ``uuid``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def machine_id(state_dir: str) -> str:
    """A stable id for this machine, persisted on first use beside the database.

    Raises ConfigError when the directory or the file could be another user's doing (a
    shared directory, a link, a file of another uid or one others may write), never
    writing through a planted name; the message says what to do.
    """
    path = os.path.join(state_dir, MACHINE_ID_FILE)
    ensure_own_dir(state_dir, "db")
    raw = read_private_file(path, "machine-id file", limit=256)
    value = (raw or b"").decode("utf-8", "replace").strip()
    if value:
        return value
    value = _new_machine_id()
    try:
        # An empty file of ours is filled in; otherwise the first writer wins.
        write_private_file(path, f"{value}\n".encode(), replace=raw is not None)
    except FileExistsError:  # another process made it meanwhile: its id is the id
        raw = read_private_file(path, "machine-id file", limit=256)
        value = (raw or b"").decode("utf-8", "replace").strip()
        if not value:
            raise ConfigError(f"machine-id file {path} is empty; remove it") from None
    except OSError as e:
        raise ConfigError(f"cannot write machine-id file {path}: {e.strerror}") from None
    return value


def hub_credentials(state_dir: str) -> tuple[str, str]:
    """(machine id, machine secret) this machine proves itself with to a hub, from the
    files in ``state_dir`` (the database's directory), made on first use. Every failure
    is a ConfigError saying which file and why."""
    try:
        return machine_id(state_dir), load_or_create(state_dir)
    except OSError as e:
        raise ConfigError(f"cannot use the machine id or secret in {state_dir}: {e}") from None
