"""A hub client's proof of its machine: a random secret kept in an owner-only file.

A hub binds each remote machine id to the first secret it sees with it and refuses that
id with any other secret, so a token holder cannot speak for another machine (or for
the hub's own). The secret lives in ``<db dir>/claude-peers-private/machine-secret``:
a directory of our own, mode 0700, and a file created 0600 under a random temporary
name with ``O_CREAT | O_EXCL | O_NOFOLLOW``, then linked into place (the first writer
wins a race; a planted or symlinked file is refused, never followed or overwritten).

Standard library only, ``os`` and ``stat`` (which ``os`` imports anyway): the hook
imports it in hub mode.
"""

import os
import stat

PRIVATE_DIR = "claude-peers-private"
SECRET_FILE = "machine-secret"
SECRET_HEX = 64
"""32 random bytes, written as hex."""


class SecretFileError(Exception):
    """The secret file or its directory is not safe to use; the message says why."""


def secret_path(state_dir: str) -> str:
    return os.path.join(state_dir, PRIVATE_DIR, SECRET_FILE)


def _private_dir(state_dir: str) -> str:
    """``<state_dir>/claude-peers-private``, created 0700; refused unless it is ours."""
    folder = os.path.join(state_dir, PRIVATE_DIR)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise SecretFileError(f"cannot create {folder}: {e.strerror}") from None
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise SecretFileError(f"{folder} is not a directory (a symlink?); remove it")
    if st.st_uid != os.getuid():
        raise SecretFileError(f"{folder} is owned by uid {st.st_uid}, not by you; remove it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(folder, 0o700)
    return folder


def _read(path: str) -> str | None:
    """The secret in ``path``, None if there is none; refuses a file that is not ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SecretFileError(f"cannot open {path}: {e.strerror} (a symlink?)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise SecretFileError(f"{path} is not a file of yours; remove it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise SecretFileError(
                f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); remove it "
                "(this machine then joins a hub as a new machine)"
            )
        raw = os.read(fd, 256)
    finally:
        os.close(fd)
    value = raw.decode("ascii", "replace").strip()
    if len(value) != SECRET_HEX or value.strip("0123456789abcdef"):
        raise SecretFileError(f"{path} does not hold a machine secret; remove it")
    return value


def load_or_create(state_dir: str) -> str:
    """This machine's hub secret, created on first use."""
    folder = _private_dir(state_dir)
    path = os.path.join(folder, SECRET_FILE)
    value = _read(path)
    if value is not None:
        return value
    tmp = os.path.join(folder, f".{SECRET_FILE}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, (os.urandom(SECRET_HEX // 2).hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:  # noqa: SIM105 - contextlib would be one more import per hook run
            os.link(tmp, path)  # never replaces: a concurrent first writer wins
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    value = _read(path)
    if value is None:  # pragma: no cover - removed between link and read
        raise SecretFileError(f"{path} vanished while it was created")
    return value
