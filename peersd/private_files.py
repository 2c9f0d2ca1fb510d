"""Files and directories only we may touch: who owns them, who may write them, and
reading and writing them without following a link another user planted.

Every refusal is a ``ConfigError`` that names the path and says what to do. Paths are
``str`` or ``os.PathLike``. Standard library only, and cheap (``os``, ``stat``, ``errno``;
no pathlib or contextlib): the hook imports it, through ``machine_secret``, in hub mode.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only (never evaluated): typing is too heavy for the hook
    from typing import TypeAlias

    StrPath: TypeAlias = str | os.PathLike[str]


def _private_group(gid: int) -> bool:
    """True for a group of one: our primary group, named after us, with no other member
    (the "user private group" many distributions give each user, with umask 002)."""
    import grp
    import pwd

    try:
        user = pwd.getpwuid(os.getuid())
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return (
        user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    )


def _others_can_write(st: os.stat_result) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    return bool(mode & 0o002 or (mode & 0o020 and not _private_group(st.st_gid)))


def _own_dir(path: StrPath, setting: str, follow_links: bool = True) -> os.stat_result:
    """Create ``path`` 0700 if missing; refuse it unless we own it and no one else may
    add, replace or remove files in it (a shared directory such as /tmp is refused:
    another user could plant a link or a file under a name we are about to use)."""
    path = os.fspath(path)
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        st = os.stat(path, follow_symlinks=follow_links)
    except OSError as e:
        raise ConfigError(f"cannot create directory {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"{path} is a symbolic link, not a directory; refusing to follow it. Remove it."
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    elsewhere = f"{setting} (CLAUDE_PEERS_{setting.upper()}) to a path in a directory of yours"
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"directory {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            f"refusing to use it. Remove it or set {elsewhere}."
        )
    if _others_can_write(st):
        raise ConfigError(
            f"directory {path} can be written by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}); refusing to keep files there, since another user "
            f"could plant or replace them. Set {elsewhere}, or, if no one else uses this "
            f"directory, run `chmod go-w {path}`."
        )
    return st


def ensure_private_dir(path: StrPath, setting: str = "socket", follow_links: bool = True) -> None:
    """Create ``path`` 0700 if missing; refuse one that is not safely ours (see
    ``_own_dir``), or a link unless ``follow_links``; take group and other permissions
    away from one that is."""
    st = _own_dir(path, setting, follow_links)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def ensure_own_dir(path: StrPath, setting: str = "db") -> None:
    """Create ``path`` 0700 if missing; refuse one that is not safely ours (see
    ``_own_dir``). Left as it is otherwise: the database's directory (``~/.claude`` by
    default) is not ours alone to tighten, and its files are 0600 anyway."""
    _own_dir(path, setting)


def check_own_file(st: os.stat_result, path: StrPath, what: str, secret: bool = False) -> None:
    """Refuse a file that is a link, not a regular file, another user's, or writable by
    other users: one that another user may have planted or changed. A ``secret`` is
    refused too if anyone else may read it (or could have, for as long as it was so)."""
    path = os.fspath(path)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"{what} {path} is a symbolic link; refusing to follow it. Remove the link "
            "(or name the real file in the setting)."
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file; refusing to use it. Remove it.")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "refusing to use it: another user may have planted it. Remove it."
        )
    if _others_can_write(st):
        raise ConfigError(
            f"{what} {path} can be written by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it. Remove it, or run `chmod 600 {path}` if its content is yours."
        )
    if secret and stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "refusing to use it: it may be known. Remove it."
        )


def open_own_file(path: StrPath, what: str, create: bool = False) -> int | None:
    """Open ``path`` read-write without following a link, after ``check_own_file``;
    None if it does not exist (and ``create`` is off). Made 0600 if it is laxer.
    O_NONBLOCK: a FIFO planted under the name must not hang us before it is refused."""
    path = os.fspath(path)
    try:
        check_own_file(os.lstat(path), path, what)
    except FileNotFoundError:
        if not create:
            return None
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a link since the lstat
            raise ConfigError(f"{what} {path} is a symbolic link; refusing to follow it") from None
        raise ConfigError(f"cannot open {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        check_own_file(st, path, what)
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private_file(
    path: StrPath, what: str, limit: int = 4096, secret: bool = False
) -> bytes | None:
    """The content of ``path`` (at most ``limit`` bytes), or None if it does not exist;
    refused as in ``check_own_file``, and never read through a link."""
    path = os.fspath(path)
    try:
        check_own_file(os.lstat(path), path, what, secret)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        check_own_file(os.fstat(fd), path, what, secret)
        return os.read(fd, limit)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def write_private_file(path: StrPath, data: bytes, replace: bool = False) -> None:
    """Create ``path`` (0600) holding ``data``, whatever another user planted nearby.

    Written to a new file with a random name (O_EXCL|O_NOFOLLOW: never through a link,
    never into someone else's file), flushed, then put in place: linked, so the first
    writer wins and FileExistsError says another got there first, or with ``replace``
    renamed over ``path`` (a link there is replaced, not followed). The directory should
    have passed ``ensure_own_dir`` or ``ensure_private_dir``.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        try:  # noqa: SIM105 - contextlib would be one more import per hook run
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    try:  # the new name survives a crash too
        dir_fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def check_socket_owner(path: StrPath) -> None:
    """Refuse to talk to a socket file another user owns."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"socket {os.fspath(path)} is owned by uid {st.st_uid}, not by you "
            f"(uid {os.getuid()}); refusing to use it."
        )
