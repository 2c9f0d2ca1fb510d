"""File paths as claude-peers shares them: absolute, resolved, UTF-8 text, shown per repository.

Every client turns what it is given (a hook's ``file_path``, a patch header, a path typed
at the CLI or passed to a tool) into the same form before it reaches the daemon, so two
sessions that name one file differently (relative, through a symlink, with ``..``) still
name the same file:

- relative paths are taken from the caller's working directory; ``~`` is the home;
- symlinks and ``..`` are resolved as the filesystem resolves them (``realpath``; a file
  that does not exist yet keeps its name under its resolved directory);
- a name whose bytes are not UTF-8 is carried as text with each such byte written
  ``\\xNN`` (the wire takes only UTF-8), the same way on every client, so a claim, an
  edit and a staged file of that name still meet;
- the repository is the nearest enclosing directory with a ``.git`` entry (a directory,
  or the file of a worktree or submodule), and paths are shown relative to it.

``peers-hook`` imports this on its edit path, so it uses ``os`` alone (no ``re``,
no ``pathlib``).
"""

import os

from .errors import ClaudePeersError

MAX_PATH_BYTES = 4096
"""A path or pattern longer than this (UTF-8 bytes) is refused: PATH_MAX on Linux."""


class PathError(ClaudePeersError, ValueError):
    """A path that cannot be used; the message says which and why."""


def text(path: str) -> str:
    """``path`` as UTF-8 text. Bytes the filesystem gave that are not UTF-8 (they arrive
    as lone surrogates, Python's ``surrogateescape``) become ``\\xNN``; any other lone
    surrogate (from a JSON ``\\udXXX`` escape) becomes ``\\udXXX``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    out = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def absolute(raw: str, cwd: str) -> str:
    """``raw`` made absolute against ``cwd`` and resolved (symlinks, ``.``, ``..``).

    The result is a filesystem string (it may hold surrogates); pass it through ``text``
    before it goes on the wire.
    """
    path = os.path.expanduser(raw) if raw.startswith("~") else raw
    if not os.path.isabs(path):
        path = os.path.join(cwd or os.sep, path)
    return os.path.realpath(path)


def repo_of(path: str, cache: "dict[str, str | None] | None" = None) -> "str | None":
    """The work tree that holds ``path``: the nearest directory, ``path`` itself included
    when it is a directory, with a ``.git`` entry. None outside any repository."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    seen = []
    found = None
    while True:
        if cache is not None and folder in cache:
            found = cache[folder]
            break
        seen.append(folder)
        if os.path.lexists(os.path.join(folder, ".git")):
            found = folder
            break
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if cache is not None:
        for folder in seen:
            cache[folder] = found
    return found


def relative(path: str, repo: "str | None") -> str:
    """``path`` shown relative to ``repo`` when it lies inside it, else as it is."""
    if repo:
        base = repo.rstrip("/")
        if path == base:
            return "."
        if path.startswith(base + "/"):
            return path[len(base) + 1 :]
    return path


def file_ref(
    raw: str, cwd: str, cache: "dict[str, str | None] | None" = None
) -> "dict[str, str | None]":
    """One edited file as the daemon takes it: ``{"path": ..., "repo": ...}`` (text)."""
    path = absolute(raw, cwd)
    repo = repo_of(path, cache)
    return {"path": text(path), "repo": text(repo) if repo is not None else None}


def file_refs(raws: "list[str]", cwd: str) -> "list[dict[str, str | None]]":
    """``file_ref`` for each distinct non-empty path, in order."""
    cache: dict[str, str | None] = {}
    refs = []
    seen = set()
    for raw in raws:
        if not raw or "\x00" in raw:
            continue
        ref = file_ref(raw, cwd, cache)
        if ref["path"] not in seen:
            seen.add(ref["path"])
            refs.append(ref)
    return refs


def check_wire_path(path: str, what: str = "path") -> None:
    """The daemon's check of a path or pattern a client sent: absolute, normalised text.

    Raises ``PathError`` naming the path and what is wrong with it.
    """
    if not path.startswith("/"):
        raise PathError(f"{what} {path!r} is not absolute (clients send resolved paths)")
    if "\x00" in path:
        raise PathError(f"{what} {path!r} contains a NUL character")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathError(f"{what} starting {path[:60]!r} is longer than {MAX_PATH_BYTES} bytes")
    if path != "/" and (
        path.endswith("/")
        or "//" in path
        or "/./" in path
        or "/../" in path
        or path.endswith(("/.", "/.."))
    ):
        raise PathError(f"{what} {path!r} is not normalised (no '.', '..', '//' or trailing '/')")
