"""Which files a hook event edits, read from the tool call the client reports.

- Claude Code: ``Write``, ``Edit``, ``MultiEdit`` (``tool_input.file_path``) and
  ``NotebookEdit`` (``tool_input.notebook_path``).
- Codex: ``apply_patch``, whose ``tool_input.command`` is the patch; every
  ``*** Add File:``, ``*** Update File:``, ``*** Delete File:`` and ``*** Move to:``
  header names a file it touches (a move touches both names). The same patch run
  through the shell (``apply_patch <<'EOF'`` in a ``Bash`` call) counts too.

Paths are returned as given (relative ones are relative to the hook's ``cwd``);
``peersd.paths`` resolves them. Runs in ``peers-hook``: standard library only.
"""

FILE_TOOLS = {
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
PATCH_TOOLS = ("apply_patch",)
SHELL_TOOLS = ("Bash", "shell", "local_shell", "exec_command")
PATCH_HEADERS = ("*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:")
BEGIN_PATCH = "*** Begin Patch"


def edited_paths(data: dict) -> "list[str]":
    """The files the tool call in hook input ``data`` edits (or is about to), in order."""
    tool = data.get("tool_name")
    args = data.get("tool_input")
    if not isinstance(tool, str) or not isinstance(args, dict):
        return []
    key = FILE_TOOLS.get(tool)
    if key is not None:
        value = args.get(key)
        return [value] if isinstance(value, str) and value else []
    if tool in PATCH_TOOLS:
        return patch_paths(_texts(args))
    if tool in SHELL_TOOLS:
        texts = [t for t in _texts(args) if BEGIN_PATCH in t]
        return patch_paths(texts)
    return []


def _texts(args: dict) -> "list[str]":
    """The strings of a tool input that may hold a patch (``command``, ``input``, ``patch``;
    a command given as an argument list counts each argument)."""
    found = []
    for key in ("command", "input", "patch", "cmd"):
        value = args.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found


def patch_paths(texts: "list[str]") -> "list[str]":
    """File names in the headers of ``apply_patch`` patches."""
    found: list[str] = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("*** "):
                continue
            for header in PATCH_HEADERS:
                if line.startswith(header):
                    name = line[len(header) :].strip()
                    if name and name not in found:
                        found.append(name)
                    break
    return found
