"""A hub client's proof of its machine: a random secret kept in an owner-only file.

A hub binds each remote machine id to the first secret it sees with it and refuses that
id with any other secret, so a token holder cannot speak for another machine (or for
the hub's own). The secret lives in ``<db dir>/claude-peers-private/machine-secret``:
a directory of our own, mode 0700 (a link there is refused), and a file created 0600
by ``private_files.write_private_file`` (the first writer wins a race; a planted,
symlinked or other-readable file is refused, never followed or overwritten). Every
refusal is a ``ConfigError``.

Standard library only, through ``private_files``: the hook imports it in hub mode.
"""

import os

from .errors import ConfigError
from .private_files import ensure_own_dir, ensure_private_dir, read_private_file, write_private_file

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
