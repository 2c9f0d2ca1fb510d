"""The reference docs are tied to the code: every setting, request, answer, event, value
type and error code is documented with exactly the fields the code has, and nothing is
documented that the code lacks. A change to ``protocol.py``, ``config.py`` or ``errors.py``
that forgets the docs fails here, with the name of what is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from peersd import protocol as p
from peersd.config import ENV_PREFIX, Settings
from peersd.errors import Code

DOCS = Path(__file__).resolve().parent.parent / "docs"
PROTOCOL = (DOCS / "protocol.md").read_text()
CONFIGURATION = (DOCS / "configuration.md").read_text()

TICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def section(text: str, heading: str) -> str:
    """The body under ``heading`` (a whole heading line) up to the next heading of its level
    or higher."""
    lines = text.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        body.append(line)
    return "\n".join(body)


def table_rows(text: str) -> list[list[str]]:
    """Cells of every table row in ``text`` (header and rule rows skipped)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] in ("field", "key", "tag", "code", "request", "path", "cause"):
            continue
        rows.append(cells)
    return rows


def first_table(text: str) -> str:
    """The first table in ``text`` (a section may have others, e.g. value tables)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def first_column(text: str) -> set[str]:
    names: set[str] = set()
    for cells in table_rows(text):
        names.update(TICKED.findall(cells[0]))
    return names


def wire_fields(cls: type) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)} - {"id"}


def tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)


# ------------------------------------------------------------------ configuration


SETTINGS_DOC = section(CONFIGURATION, "## Settings")
COMPUTED_DEFAULTS = {"socket", "db", "config"}
"""Settings whose default is worked out from HOME, not written in the Struct."""


def documented_settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for cells in table_rows(SETTINGS_DOC):
        for name in TICKED.findall(cells[0]):
            found[name] = cells
    return found


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(documented_settings())
    fields = set(Settings.__struct_fields__)
    assert fields - documented == set(), "settings missing from docs/configuration.md"
    assert documented - fields == set(), "docs/configuration.md documents unknown settings"


@pytest.mark.parametrize("name", sorted(Settings.__struct_fields__))
def test_setting_rows_name_their_env_var_and_default(name: str) -> None:
    cells = documented_settings()[name]
    assert f"`{ENV_PREFIX}{name.upper()}`" in cells[1], f"{name}: env var column"
    if name in COMPUTED_DEFAULTS:
        return
    default = msgspec.structs.fields(Settings)[Settings.__struct_fields__.index(name)].default
    shown = cells[2].split("`")[1] if "`" in cells[2] else cells[2]
    assert shown == json.dumps(default), f"{name}: docs say default {shown}, code has {default!r}"


# ------------------------------------------------------------------ protocol

REQUESTS = section(PROTOCOL, "## 11. Request reference")
RESPONSES = section(PROTOCOL, "## 12. Response reference")
EVENTS = section(PROTOCOL, "## 13. Event reference")
VALUES = section(PROTOCOL, "## 14. Value types")
ERRORS = section(PROTOCOL, "## 15. Error codes")


def test_the_request_table_lists_every_request() -> None:
    listed = first_column(REQUESTS.split("\n### ", 1)[0])
    assert listed == {tag(cls) for cls in p.REQUEST_TYPES}


def test_the_request_table_names_each_answer_as_the_code_types_it() -> None:
    documented = {
        cells[0].strip("`"): cells[-1].strip("`")
        for cells in table_rows(REQUESTS.split("\n### ", 1)[0])
    }
    assert documented == {tag(req): tag(answer) for req, answer in p.ANSWERS.items()}


@pytest.mark.parametrize("cls", p.REQUEST_TYPES, ids=tag)
def test_each_request_documents_exactly_its_fields(cls: type) -> None:
    body = first_table(section(PROTOCOL, f"### `{tag(cls)}`"))
    assert first_column(body) == wire_fields(cls), f"fields of `{tag(cls)}` in §11"


@pytest.mark.parametrize("cls", [p.Hello, p.Welcome, p.Error], ids=tag)
def test_handshake_and_error_frames_document_their_fields(cls: type) -> None:
    where = {"hello": "## 5. Handshake: hello and welcome", "error": "### 6.4 Error frames"}
    body = section(PROTOCOL, where.get(tag(cls), "## 5. Handshake: hello and welcome"))
    documented = first_column(body)
    assert wire_fields(cls) <= documented, f"fields of `{tag(cls)}`"


RESPONSE_TYPES = [cls for cls in p.Response.__args__ if cls not in (p.Welcome, p.Error)]


@pytest.mark.parametrize("cls", RESPONSE_TYPES, ids=tag)
def test_each_response_documents_exactly_its_fields(cls: type) -> None:
    if cls is p.DaemonStatus:
        documented = first_column(RESPONSES.split("`daemon_status` fields:", 1)[1])
    else:
        rows = [cells for cells in table_rows(RESPONSES) if cells[0] == f"`{tag(cls)}`"]
        assert rows, f"`{tag(cls)}` missing from §12"
        # Nested records are spelled out in braces; their keys are not the frame's fields.
        documented = set(TICKED.findall(re.sub(r"\{[^}]*\}", "", rows[0][1]))) - {"id"}
    assert documented == wire_fields(cls), f"fields of `{tag(cls)}` in §12"


@pytest.mark.parametrize("cls", p.EVENT_TYPES, ids=tag)
def test_each_event_documents_exactly_its_fields(cls: type) -> None:
    for cells in table_rows(EVENTS):
        if cells[0] == f"`{tag(cls)}`":
            documented = {f for f in TICKED.findall(cells[2]) if not f.startswith("ev_")}
            values = {"sent", "delivered", "expired"}
            assert documented - values == wire_fields(cls) - values, f"`{tag(cls)}` in §13"
            return
    pytest.fail(f"`{tag(cls)}` missing from §13")


@pytest.mark.parametrize(
    "cls",
    [p.Peer, p.Message, p.MessageStatusItem, p.SentItem, p.FederationState],
    ids=lambda c: c.__name__,
)
def test_each_value_type_documents_exactly_its_fields(cls: type) -> None:
    body = section(VALUES, f"### {cls.__name__}")
    assert first_column(body) == {f.encode_name for f in msgspec.structs.fields(cls)}


def test_every_error_code_is_documented_and_nothing_else() -> None:
    codes = {v for k, v in vars(Code).items() if k.isupper() and isinstance(v, str)}
    documented = first_column(ERRORS)
    assert codes - documented == set(), "codes missing from docs/protocol.md §15"
    assert documented - codes == set(), "docs/protocol.md §15 documents unknown codes"


def test_the_doc_parser_sees_a_missing_field() -> None:
    """The checks above can fail: a table without one field is seen as different."""
    body = section(PROTOCOL, "### `send`")
    assert "to" in first_column(body)
    assert "to" not in first_column(body.replace("| `to` |", "| to |"))
