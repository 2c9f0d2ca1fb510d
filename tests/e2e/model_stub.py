"""Scripted stand-ins for the model APIs that Claude Code and Codex talk to.

Each stub is a small HTTP server on 127.0.0.1 (``http.server`` in a thread). It answers
the conversation requests of one CLI run from a *script*: a list of steps, one per model
request, each saying "call this tool with these arguments" or "say this text". A step
may also be a function of the request it answers, for a model that reads what it was
given (an id in a tool result) before it acts. Every request is recorded, so a test can
assert what the model saw: hook context, tool results, Stop-hook feedback.

- ``AnthropicStub``: the Messages API (``POST /v1/messages``) with streaming SSE events
  (``message_start``, ``content_block_start``, ``content_block_delta`` with
  ``text_delta`` / ``input_json_delta``, ``content_block_stop``, ``message_delta``,
  ``message_stop``), for ``ANTHROPIC_BASE_URL``. Also answers ``count_tokens``.
- ``ResponsesStub``: the OpenAI Responses API (``POST /v1/responses``, streaming
  ``response.created``, ``response.output_item.added/done``, ``response.completed``),
  for a Codex ``[model_providers.X]`` with ``wire_api = "responses"``. Function calls to
  MCP tools carry ``namespace = "mcp__<server>"`` and ``name = "<tool>"``.
- ``GeminiStub``: the Gemini API (``POST /v1beta/models/<model>:streamGenerateContent``
  with ``alt=sse``, and ``:generateContent``), for Gemini CLI's ``GOOGLE_GEMINI_BASE_URL``.
  Tool calls are ``functionCall`` parts named as the request declares the tool
  (``mcp_<server>_<tool>`` for MCP tools).
- ``ChatStub``: the OpenAI Chat Completions API (``POST /v1/chat/completions``, streaming
  ``chat.completion.chunk`` events), for an OpenAI-compatible provider's ``baseURL``
  (opencode). Tool calls are ``tool_calls`` named as the request offers the function
  (``<server>_<tool>`` in opencode).

Requests that are not part of the scripted conversation (a Claude Code side request with
no tools, say) get a short canned answer and do not consume a step. Anything else gets a
quick 404 so that no client ever waits on the stub.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Turn:
    """What the scripted model does for one request: call a tool, or say ``text``."""

    text: str | None = None
    tool: str | None = None
    """The tool's full name as the client shows it, e.g. ``mcp__claude-peers__whoami``."""
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def say(cls, text: str) -> Turn:
        return cls(text=text)

    @classmethod
    def call(cls, tool: str, **args: Any) -> Turn:
        return cls(tool=tool, args=args)

    def describe(self) -> str:
        if self.tool:
            return f"call {self.tool}({json.dumps(self.args)})"
        return f"say {self.text!r}"


Step = Turn | Callable[["Recorded"], Turn]
"""A turn, or a function that looks at the request (and may act, e.g. queue mail
through the daemon) and returns the turn."""


@dataclass
class Recorded:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float
    body: Any = None
    scripted: bool = False
    answer: str = ""

    def text(self) -> str:
        """The whole body as text (what the model was given), for substring checks."""
        return self.raw.decode("utf-8", "replace")

    # -- Anthropic Messages helpers

    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or [])

    def tool_results(self) -> list[dict[str, Any]]:
        """Every ``tool_result`` block in the conversation, oldest first."""
        found = []
        for msg in self.messages():
            content = msg.get("content")
            if isinstance(content, list):
                found += [b for b in content if b.get("type") == "tool_result"]
        return found

    def last_tool_result_text(self) -> str:
        results = self.tool_results()
        return block_text(results[-1]) if results else ""

    # -- OpenAI Responses helpers

    def inputs(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("input") or [])

    def function_outputs(self) -> list[str]:
        return [
            output_text(item.get("output"))
            for item in self.inputs()
            if item.get("type") == "function_call_output"
        ]

    def role_texts(self, role: str) -> list[str]:
        texts = []
        for item in self.inputs():
            if item.get("type") == "message" and item.get("role") == role:
                texts.append(block_text(item))
        return texts


def block_text(block: Any) -> str:
    """All text inside a content block / message, however nested."""
    if isinstance(block, str):
        return block
    if isinstance(block, list):
        return "\n".join(block_text(b) for b in block)
    if isinstance(block, dict):
        if isinstance(block.get("text"), str):
            return block["text"]
        if "content" in block:
            return block_text(block["content"])
        if "output" in block:
            return output_text(block["output"])
    return ""


def output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return block_text(output)


class ScriptExhausted(AssertionError):
    pass


class ModelStub:
    """Base: the HTTP server, the recording and the script."""

    kind = "model"

    def __init__(self, script: list[Step], name: str = "") -> None:
        self.name = name or self.kind
        self.script = list(script)
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self.ids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"stub-{self.name}", daemon=True
        )

    # ------------------------------------------------------------ lifetime

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ModelStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ModelStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ what was seen

    @property
    def scripted(self) -> list[Recorded]:
        """The requests answered from the script (the conversation), in order."""
        with self.lock:
            return [r for r in self.requests if r.scripted]

    def left(self) -> int:
        with self.lock:
            return len(self.script)

    def dump(self, limit: int = 6000) -> str:
        """Every request, abbreviated, and what the stub answered: for failure reports."""
        out = [f"== {self.name} stub on {self.url}: {len(self.requests)} request(s)"]
        if self.errors:
            out.append("errors: " + "; ".join(self.errors))
        with self.lock:
            requests = list(self.requests)
        for i, r in enumerate(requests):
            tag = "SCRIPTED" if r.scripted else "other"
            out.append(f"-- #{i} {r.method} {r.path} [{tag}] -> {r.answer}")
            body = self.summarize(r)
            if len(body) > limit:
                body = body[: limit // 2] + "\n[...]\n" + body[-limit // 2 :]
            out.append(body)
        return "\n".join(out)

    def summarize(self, r: Recorded) -> str:
        return r.text()

    # ------------------------------------------------------------ serving

    def next_turn(self, req: Recorded) -> Turn:
        with self.lock:
            if not self.script:
                message = f"script exhausted at request {len(self.scripted) + 1}"
                self.errors.append(message)
                raise ScriptExhausted(message)
            step = self.script.pop(0)
        return step(req) if callable(step) else step

    def handle(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    raw = read_chunked(self.rfile)
                if (self.headers.get("content-encoding") or "").lower() in ("zstd", "gzip"):
                    raw = decompress(raw, self.headers["content-encoding"].lower())
                req = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw=raw,
                    at=time.time(),
                )
                with contextlib.suppress(ValueError):
                    req.body = json.loads(raw) if raw else None
                with stub.lock:
                    stub.requests.append(req)
                try:
                    stub.handle(self, req)
                except ScriptExhausted as e:
                    req.answer = f"500 {e}"
                    send(self, 500, {"error": {"type": "api_error", "message": str(e)}})
                except Exception as e:  # a broken step: say so, never hang the client
                    stub.errors.append(f"{type(e).__name__}: {e}")
                    req.answer = f"500 {type(e).__name__}: {e}"
                    with contextlib.suppress(OSError):
                        send(self, 500, {"error": {"type": "api_error", "message": str(e)}})

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        return Handler


def read_chunked(rfile: Any) -> bytes:
    data = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return data
        data += rfile.read(size)
        rfile.readline()


def decompress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        import gzip

        return gzip.decompress(raw)
    try:  # Python 3.14 has compression.zstd; older ones need the zstandard package
        from compression import zstd  # type: ignore[import-not-found]

        return zstd.decompress(raw)
    except ImportError:
        return raw


def send(
    h: BaseHTTPRequestHandler,
    status: int,
    payload: Any,
    content_type: str = "application/json",
) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("content-type", content_type)
    h.send_header("content-length", str(len(data)))
    if content_type == "text/event-stream":
        h.send_header("cache-control", "no-cache")
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)
        h.wfile.flush()


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


# --------------------------------------------------------------------------- Anthropic


class AnthropicStub(ModelStub):
    """The Anthropic Messages API, as Claude Code uses it (``ANTHROPIC_BASE_URL``)."""

    kind = "anthropic"
    side_text = "ok"

    def is_conversation(self, req: Recorded) -> bool:
        """The main agent loop sends the tools; side requests (titles, checks) send none."""
        body = req.body if isinstance(req.body, dict) else {}
        return bool(body.get("tools"))

    def handle(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        path = urlsplit(req.path).path
        if req.method == "POST" and path.endswith("/v1/messages/count_tokens"):
            req.answer = "count_tokens"
            send(h, 200, {"input_tokens": 100})
            return
        if req.method == "POST" and path.endswith("/v1/messages"):
            body = req.body if isinstance(req.body, dict) else {}
            if self.is_conversation(req):
                req.scripted = True
                turn = self.next_turn(req)
            else:
                turn = Turn.say(self.side_text)
            req.answer = turn.describe()
            model = str(body.get("model") or "claude-stub")
            if body.get("stream"):
                send(h, 200, self.stream(turn, model), "text/event-stream")
            else:
                send(h, 200, self.message(turn, model))
            return
        req.answer = "404"
        send(h, 404, {"type": "error", "error": {"type": "not_found_error", "message": "stub"}})

    def _ids(self) -> tuple[str, str]:
        n = next(self.ids)
        return f"msg_stub{n:04d}", f"toolu_stub{n:04d}"

    def message(self, turn: Turn, model: str) -> dict[str, Any]:
        msg_id, tool_id = self._ids()
        if turn.tool:
            content = [{"type": "tool_use", "id": tool_id, "name": turn.tool, "input": turn.args}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": turn.text or ""}]
            stop = "end_turn"
        return {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 10},
        }

    def stream(self, turn: Turn, model: str) -> bytes:
        msg_id, tool_id = self._ids()
        start = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 1},
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start})
        ]
        if turn.tool:
            block = {"type": "tool_use", "id": tool_id, "name": turn.tool, "input": {}}
            arguments = json.dumps(turn.args)
            half = len(arguments) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in (arguments[:half], arguments[half:])
            ]
            stop = "tool_use"
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": turn.text or ""}]
            stop = "end_turn"
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 10},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return sse(events)

    def summarize(self, r: Recorded) -> str:
        if not isinstance(r.body, dict) or "messages" not in r.body:
            return r.text()[:2000]
        names = [t.get("name") for t in r.body.get("tools") or []]
        lines = [f"model={r.body.get('model')} tools={names}"]
        for msg in r.body["messages"]:
            content = msg.get("content")
            if isinstance(content, str):
                lines.append(f"[{msg.get('role')}] {content}")
                continue
            for b in content or []:
                kind = b.get("type")
                if kind == "tool_use":
                    lines.append(f"[{msg.get('role')}:tool_use] {b.get('name')} {b.get('input')}")
                else:
                    lines.append(f"[{msg.get('role')}:{kind}] {block_text(b)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- OpenAI


class ResponsesStub(ModelStub):
    """The OpenAI Responses API, as Codex uses it (``wire_api = "responses"``)."""

    kind = "responses"

    def handle(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        path = urlsplit(req.path).path
        if req.method == "GET" and path.endswith("/models"):
            req.answer = "models"
            send(h, 200, {"object": "list", "data": [], "models": []})
            return
        if req.method == "POST" and path.endswith("/responses"):
            body = req.body if isinstance(req.body, dict) else {}
            req.scripted = True
            turn = self.next_turn(req)
            req.answer = turn.describe()
            send(h, 200, self.stream(turn, body), "text/event-stream")
            return
        req.answer = "404"
        send(h, 404, {"error": {"message": "stub: not found", "type": "not_found"}})

    @staticmethod
    def function_name(tool: str, body: dict[str, Any]) -> tuple[str | None, str]:
        """``mcp__server__tool`` as the request offers it: a namespace + name, or flat."""
        if tool.startswith("mcp__"):
            server, _, name = tool[len("mcp__") :].partition("__")
            # Codex sanitizes the server name: "claude-peers" becomes "claude_peers".
            namespace = "mcp__" + re.sub(r"[^A-Za-z0-9_]", "_", server)
            for t in body.get("tools") or []:
                if t.get("type") == "namespace" and t.get("name") in (namespace, f"mcp__{server}"):
                    return str(t["name"]), name
                if t.get("name") == tool:
                    return None, tool
            return namespace, name
        return None, tool

    def stream(self, turn: Turn, body: dict[str, Any]) -> bytes:
        n = next(self.ids)
        resp_id = f"resp_stub{n:04d}"
        if turn.tool:
            namespace, name = self.function_name(turn.tool, body)
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_stub{n:04d}",
                "call_id": f"call_stub{n:04d}",
                "name": name,
                "arguments": json.dumps(turn.args),
                "status": "completed",
            }
            if namespace:
                item["namespace"] = namespace
        else:
            item = {
                "type": "message",
                "role": "assistant",
                "id": f"msg_stub{n:04d}",
                "status": "completed",
                "content": [{"type": "output_text", "text": turn.text or "", "annotations": []}],
            }
        added = dict(item)
        if item["type"] == "message":
            added["content"] = []
            added["status"] = "in_progress"
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 110,
        }
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "response.created",
                {"type": "response.created", "response": {"id": resp_id, "status": "in_progress"}},
            ),
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": 0, "item": added},
            ),
        ]
        if item["type"] == "message":
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": 0,
                        "content_index": 0,
                        "delta": turn.text or "",
                    },
                )
            )
        events += [
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ),
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "response": {
                        "id": resp_id,
                        "status": "completed",
                        "output": [item],
                        "usage": usage,
                    },
                },
            ),
        ]
        return sse(events)

    def summarize(self, r: Recorded) -> str:
        if not isinstance(r.body, dict) or "input" not in r.body:
            return r.text()[:2000]
        tools = []
        for t in r.body.get("tools") or []:
            if t.get("type") == "namespace":
                tools.append(
                    f"{t.get('name')}{{{','.join(x.get('name') for x in t.get('tools') or [])}}}"
                )
            else:
                tools.append(str(t.get("name") or t.get("type")))
        lines = [f"model={r.body.get('model')} tools={tools}"]
        for item in r.body["input"]:
            kind = item.get("type")
            if kind == "message":
                lines.append(f"[{item.get('role')}] {block_text(item)}")
            elif kind == "function_call":
                lines.append(
                    f"[function_call] {item.get('namespace', '')} {item.get('name')} "
                    f"{item.get('arguments')}"
                )
            elif kind == "function_call_output":
                lines.append(f"[function_call_output] {output_text(item.get('output'))}")
            else:
                lines.append(f"[{kind}] {json.dumps(item)[:500]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- Gemini


class GeminiStub(ModelStub):
    """The Gemini API (``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` and
    ``:generateContent``), as Gemini CLI uses it with ``GOOGLE_GEMINI_BASE_URL``.

    The conversation is what streams with tools offered; anything else (Gemini CLI's
    side requests: next-speaker checks, routing, ``countTokens``) gets a canned answer.
    A side request that asks for JSON gets ``side_json``. Tool calls are ``functionCall``
    parts named as the request declares them (:meth:`function_name`).
    """

    kind = "gemini"
    side_text = "ok"
    side_json: dict[str, Any] = {"next_speaker": "user", "reasoning": "stub"}

    def is_conversation(self, req: Recorded) -> bool:
        body = req.body if isinstance(req.body, dict) else {}
        return ":streamGenerateContent" in req.path and bool(body.get("tools"))

    def handle(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        path = urlsplit(req.path).path
        body = req.body if isinstance(req.body, dict) else {}
        if req.method == "POST" and path.endswith(":countTokens"):
            req.answer = "countTokens"
            send(h, 200, {"totalTokens": 100})
            return
        if req.method == "POST" and (
            path.endswith(":streamGenerateContent") or path.endswith(":generateContent")
        ):
            if self.is_conversation(req):
                req.scripted = True
                turn = self.next_turn(req)
            else:
                config = body.get("generationConfig") or {}
                json_wanted = config.get("responseMimeType") == "application/json"
                turn = Turn.say(json.dumps(self.side_json) if json_wanted else self.side_text)
            req.answer = turn.describe()
            answer = self.response(turn, body)
            if path.endswith(":streamGenerateContent"):
                send(h, 200, f"data: {json.dumps(answer)}\r\n\r\n".encode(), "text/event-stream")
            else:
                send(h, 200, answer)
            return
        req.answer = "404"
        send(h, 404, {"error": {"code": 404, "message": "stub: not found", "status": "NOT_FOUND"}})

    @staticmethod
    def declared(body: dict[str, Any]) -> list[str]:
        """The function names the request offers the model."""
        return [
            str(d.get("name"))
            for t in body.get("tools") or []
            for d in t.get("functionDeclarations") or []
        ]

    def function_name(self, tool: str, body: dict[str, Any]) -> str:
        """``mcp__<server>__<tool>`` as the request declares it; else ``tool`` unchanged."""
        names = self.declared(body)
        if tool in names or not tool.startswith("mcp__"):
            return tool
        server, _, name = tool[len("mcp__") :].partition("__")
        for candidate in (f"mcp_{server}_{name}", f"{server}__{name}", name):
            if candidate in names:
                return candidate
        return tool

    def response(self, turn: Turn, body: dict[str, Any]) -> dict[str, Any]:
        n = next(self.ids)
        if turn.tool:
            call = {"name": self.function_name(turn.tool, body), "args": turn.args}
            part: dict[str, Any] = {"functionCall": call}
        else:
            part = {"text": turn.text or ""}
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": 10,
                "totalTokenCount": 110,
            },
            "modelVersion": "gemini-stub",
            "responseId": f"resp_stub{n:04d}",
        }

    def contents(self, r: Recorded) -> list[dict[str, Any]]:
        body = r.body if isinstance(r.body, dict) else {}
        return list(body.get("contents") or [])

    def summarize(self, r: Recorded) -> str:
        if not isinstance(r.body, dict) or "contents" not in r.body:
            return r.text()[:2000]
        lines = [f"{r.path} tools={self.declared(r.body)}"]
        for c in r.body["contents"]:
            for part in c.get("parts") or []:
                if "text" in part:
                    lines.append(f"[{c.get('role')}] {part['text']}")
                else:
                    lines.append(f"[{c.get('role')}] {json.dumps(part)[:800]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- Chat Completions


class ChatStub(ModelStub):
    """The OpenAI Chat Completions API (``POST …/chat/completions``, ``stream: true``), as an
    OpenAI-compatible provider uses it (opencode's ``@ai-sdk/openai-compatible``).

    The conversation is what offers tools; anything else (opencode's title request) gets a
    canned answer and consumes no step.
    """

    kind = "chat"
    side_text = "Stub session"

    def is_conversation(self, req: Recorded) -> bool:
        body = req.body if isinstance(req.body, dict) else {}
        return bool(body.get("tools"))

    def handle(self, h: BaseHTTPRequestHandler, req: Recorded) -> None:
        path = urlsplit(req.path).path
        body = req.body if isinstance(req.body, dict) else {}
        if req.method == "GET" and path.endswith("/models"):
            req.answer = "models"
            send(h, 200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
            return
        if req.method == "POST" and path.endswith("/chat/completions"):
            if self.is_conversation(req):
                req.scripted = True
                turn = self.next_turn(req)
            else:
                turn = Turn.say(self.side_text)
            req.answer = turn.describe()
            if body.get("stream"):
                send(h, 200, self.stream(turn, body), "text/event-stream")
            else:
                send(h, 200, self.completion(turn, body))
            return
        req.answer = "404"
        send(h, 404, {"error": {"message": "stub: not found", "type": "not_found"}})

    @staticmethod
    def declared(body: dict[str, Any]) -> list[str]:
        """The function names the request offers the model."""
        return [str((t.get("function") or {}).get("name")) for t in body.get("tools") or []]

    def function_name(self, tool: str, body: dict[str, Any]) -> str:
        """``mcp__<server>__<tool>`` as the request offers it; else ``tool`` unchanged."""
        names = self.declared(body)
        if tool in names or not tool.startswith("mcp__"):
            return tool
        server, _, name = tool[len("mcp__") :].partition("__")
        clean = re.sub(r"[^A-Za-z0-9_-]", "_", server)
        for candidate in (f"{server}_{name}", f"{clean}_{name}", f"{server}-{name}", name):
            if candidate in names:
                return candidate
        return tool

    def _message(self, turn: Turn, body: dict[str, Any], n: int) -> dict[str, Any]:
        if turn.tool:
            call = {
                "index": 0,
                "id": f"call_stub{n:04d}",
                "type": "function",
                "function": {
                    "name": self.function_name(turn.tool, body),
                    "arguments": json.dumps(turn.args),
                },
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"role": "assistant", "content": turn.text or ""}

    def completion(self, turn: Turn, body: dict[str, Any]) -> dict[str, Any]:
        n = next(self.ids)
        message = self._message(turn, body, n)
        return {
            "id": f"chatcmpl-stub{n:04d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if turn.tool else "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }

    def stream(self, turn: Turn, body: dict[str, Any]) -> bytes:
        n = next(self.ids)
        base = {
            "id": f"chatcmpl-stub{n:04d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
        }
        delta = self._message(turn, body, n)
        if delta.get("content") is None:
            delta.pop("content")
        chunks = [
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "finish_reason": "tool_calls" if turn.tool else "stop",
                    }
                ],
            },
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            },
        ]
        return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"

    def contents(self, r: Recorded) -> list[dict[str, Any]]:
        body = r.body if isinstance(r.body, dict) else {}
        return list(body.get("messages") or [])

    def summarize(self, r: Recorded) -> str:
        if not isinstance(r.body, dict) or "messages" not in r.body:
            return r.text()[:2000]
        lines = [f"{r.path} model={r.body.get('model')} tools={self.declared(r.body)}"]
        for m in r.body["messages"]:
            calls = m.get("tool_calls")
            text = block_text(m.get("content")) if m.get("content") is not None else ""
            lines.append(f"[{m.get('role')}] {text}" + (f" {json.dumps(calls)}" if calls else ""))
        return "\n".join(lines)
