"""The folder layout is the layering: each module imports only from its own layer and the
layers below it. Checked on the source (every import statement, including those inside
functions), so a lazy import cannot hide a dependency the wrong way.

    base      errors, rules, protocol, config, private_files, identity, agents,
              endpoint, machine_secret, orphans
    store     store, commit                         (base)
    daemon    server, connection, handlers, ...     (base, store)
    client    client, autostart, wire               (base)
    peers_mcp                                       (base, client)
    peers_cli                                       (base, client, peers_mcp; runs the daemon)

The daemon and the clients stand side by side: neither imports the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: dict[str, set[str]] = {
    "base": {
        "peersd",
        "peersd.errors",
        "peersd.rules",
        "peersd.protocol",
        "peersd.config",
        "peersd.identity",
        "peersd.agents",
        "peersd.endpoint",
        "peersd.machine_secret",
        "peersd.private_files",
        "peersd.orphans",
        "peersd.paths",
        "peersd.globs",
        "peersd.kinds",
        "peersd.natsconf",
    },
    "store": {
        "peersd.store",
        "peersd.commit",
        "peersd.files",
        "peersd.schema",
        "peersd.machines",
        "peersd.audit",
        "peersd.upkeep",
        "peersd.workstate",
        "peersd.groups",
        "peersd.mailstore",
        "peersd.outbox",
    },
    "daemon": {
        "peersd.overseer",
        "peersd.server",
        "peersd.connection",
        "peersd.handlers",
        "peersd.routes",
        "peersd.housekeeping",
        "peersd.kill",
        "peersd.ratelimit",
        "peersd.lifecycle",
        "peersd.__main__",
        "peersd.coordination",
        "peersd.wake",
        "peersd.tasks",
        "peersd.decisions",
        "peersd.proposals",
        "peersd.report",
        "peersd.mailops",
        "peersd.federation",
        "peersd.directory",
    },
    "client": {"peersd.client", "peersd.autostart", "peersd.wire"},
}

ALLOWED: dict[str, set[str]] = {
    "base": {"base"},
    "store": {"base", "store"},
    "daemon": {"base", "store", "daemon"},
    "client": {"base", "client"},
    "peers_mcp": {"base", "client", "peers_mcp"},
    # `peers daemon run` runs the daemon in the foreground: the one way down.
    "peers_cli": {"base", "client", "peers_mcp", "peers_cli", "daemon"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    for layer, members in LAYERS.items():
        if module in members:
            return layer
    top = module.split(".")[0]
    return top if top in ("peers_mcp", "peers_cli") else None


def imports(path: Path, module: str) -> set[str]:
    """Every project module ``path`` imports (absolute or relative, at any depth)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from . import protocol` names a module; `from .x import y` names x.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("peersd", "peers_mcp", "peers_cli"):
                found.add(name)
    return found


def sources() -> list[Path]:
    return sorted(
        p for pkg in ("peersd", "peers_mcp", "peers_cli") for p in (ROOT / pkg).rglob("*.py")
    )


def known(name: str) -> str | None:
    """The layer of ``name`` if it is a module (not an attribute of one)."""
    while name:
        layer = layer_of(name)
        if layer is not None and (ROOT / (name.replace(".", "/") + ".py")).exists():
            return layer
        if layer is not None and (ROOT / name.replace(".", "/") / "__init__.py").exists():
            return layer
        name = name.rpartition(".")[0]
    return None


def test_every_peersd_module_has_a_layer() -> None:
    unplaced = [
        module_name(p)
        for p in sources()
        if module_name(p).startswith("peersd") and layer_of(module_name(p)) is None
    ]
    assert not unplaced, f"put these modules in a layer in tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    assert layer is not None
    wrong = sorted(
        f"{name} ({target})"
        for name in imports(path, module)
        if (target := known(name)) is not None and target not in ALLOWED[layer]
    )
    assert not wrong, f"{module} ({layer}) imports across the layers: {wrong}"


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function is found, relative ones resolved."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .client import Client\n    from . import store\n")
    found = imports(src, "peersd.handlers")
    assert {"peersd.client", "peersd.store"} <= found
    assert known("peersd.client.Client") == "client"


def test_the_request_table_is_built_above_the_features() -> None:
    """``peersd.routes`` gathers every feature's handlers; ``handlers`` imports none of
    them at module level, so any module can be imported first (it once raised "partially
    initialized module 'peersd.proposals'" when housekeeping was imported before
    handlers)."""
    import subprocess
    import sys

    from peersd import routes

    features = {m.__name__ for m in routes.FEATURES}
    tree = ast.parse((ROOT / "peersd" / "handlers.py").read_text())
    top = {
        f"peersd.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
        for alias in node.names
    }
    assert not top & features, top & features
    for first in sorted(features | {"peersd.housekeeping", "peersd.federation"}):
        done = subprocess.run(
            [sys.executable, "-c", f"import {first}; import peersd.server"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (first, done.stderr[-500:])
