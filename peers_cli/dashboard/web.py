"""The dashboard's web side: a Starlette app behind a guard, serving its own assets, one
WebSocket of updates and a few JSON actions.

Safe by default (docs/dashboard.md): every request needs the token (the URL carries it
once, then an HttpOnly SameSite=Strict cookie), state-changing ones a CSRF header too;
the Host header must be a loopback name or the configured host (DNS rebinding), a
WebSocket's Origin this very origin; every answer carries a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from peers_mcp.render import clean
from peersd.config import Settings
from peersd.errors import ClaudePeersError, ConfigError, PeersError
from peersd.private_files import ensure_private_dir, read_private_file, write_private_file

from .link import Overseer, error_body

log = logging.getLogger("peers.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_FILE = "claude-peers-dashboard.token"
TOKEN_HEX = 64
CSRF_HEADER = "x-peers-csrf"
PING = 20.0
"""Seconds of quiet after which a page gets a ping (it reconnects after 45 s of silence:
a laptop that slept, a proxy that dropped the socket)."""
SEND_TIMEOUT = 30.0
"""Seconds one update may wait for a page to read what it was sent before: a page that
stopped reading is hung up on (its connection aborted), not held in memory for good."""
MAX_BODY = 256 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def token_path(settings: Settings) -> Path:
    """Beside the socket, in the owner-only run directory."""
    return settings.run_dir / TOKEN_FILE


def load_token(settings: Settings, renew: bool = False) -> str:
    """The dashboard's token (0600 beside the socket), made on first use."""
    path = token_path(settings)
    ensure_private_dir(path.parent)
    if not renew:
        raw = read_private_file(path, "dashboard token", limit=256, secret=True)
        if raw is not None:
            value = raw.decode("ascii", "replace").strip()
            if len(value) == TOKEN_HEX and not value.strip("0123456789abcdef"):
                return value
    token = secrets.token_hex(TOKEN_HEX // 2)
    write_private_file(path, token.encode() + b"\n", replace=True)
    return token


def open_page(settings: Settings, port: int, url: str) -> Path:
    """A 0600 HTML file beside the token that sends the browser on to ``url`` (as Jupyter
    does): the browser is started with this file's path, so the token never shows in a
    command line other users can read (``/proc/PID/cmdline``). Removed when the dashboard
    stops."""
    path = settings.run_dir / f"claude-peers-dashboard-{port}.html"
    ensure_private_dir(path.parent)
    shown = html.escape(url, quote=True)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={shown}">'
        "<title>peers dashboard</title></head>\n"
        f'<body><p>Opening <a href="{shown}">the dashboard</a>…</p></body></html>\n'
    )
    write_private_file(path, page.encode(), replace=True)
    return path


def _landing(path: str) -> Response:
    """A page that sets nothing itself but sends the browser on to ``path`` (same origin)."""
    shown = html.escape(path, quote=True)
    body = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={shown}">'
        # Its own icon, or the browser asks for /favicon.ico (a 404 in its console).
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'
        "<title>peers dashboard</title></head>\n"
        f'<body><p><a href="{shown}">the dashboard</a></p></body></html>\n'
    )
    return Response(body, media_type="text/html; charset=utf-8")


def _aborter(send: Send) -> Callable[[], None]:
    """How to drop a WebSocket's connection at once, its unsent data with it: a close
    frame (even the transport's close) waits behind what a page that stopped reading
    never takes. uvicorn's ``send`` is its protocol's method, which holds the transport;
    another server: only the app's side ends."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else (lambda: None)


def derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    """A host as it appears in a URL or Host header: an IPv6 address in brackets."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


class Guard:
    """Token, Host, Origin and CSRF checks in front of everything; security headers on
    every answer. Plain ASGI, so the WebSocket is refused before it is accepted."""

    def __init__(self, app: ASGIApp, token: str, host: str, tls: bool) -> None:
        self.app = app
        self.token = token
        self.cookie_value = derive(token, "cookie")
        self.csrf = derive(token, "csrf")
        self.host = host
        self.tls = tls
        self.port = 0
        """The bound port, set once the socket is bound (``dashboard.serve``)."""

    @property
    def cookie(self) -> str:
        # Cookies ignore the port: one name per port, so two dashboards do not collide.
        return f"peers_dash_{self.port}"

    def allowed_hosts(self) -> set[str]:
        # The configured host always: it is the one the printed URL names (127.0.0.2 too).
        names = {"127.0.0.1", "localhost", "[::1]", _bracketed(self.host)}
        hosts = {f"{name}:{self.port}" for name in names}
        if self.port in (80, 443):
            hosts |= names
        return {h.lower() for h in hosts}

    def origins(self) -> set[str]:
        scheme = "https" if self.tls else "http"
        return {f"{scheme}://{h}" for h in self.allowed_hosts()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, text = refusal
            log.warning("refused %s %s: %s", scope["type"], scope.get("path"), text)
            if scope["type"] == "websocket":
                await receive()  # websocket.connect; closing now answers 403
                await send({"type": "websocket.close", "code": 1008, "reason": text})
                return
            await self._secured(PlainTextResponse(text + "\n", status), scope, receive, send)
            return
        if scope["type"] == "websocket":
            scope["peers.abort"] = _aborter(send)
        if scope["type"] == "http" and self._query_token(scope):
            # The URL carried the token: swap it for the cookie and drop it from the URL.
            # A page that moves on by itself, not a 303: a navigation that began elsewhere
            # (the file ``open_page`` writes) would carry the SameSite=Strict cookie through
            # neither a redirect nor a refresh of a foreign page; this one is the origin's own.
            response = _landing("/" + (scope.get("path") or "").lstrip("/"))  # never //host
            response.set_cookie(
                self.cookie,
                self.cookie_value,
                httponly=True,
                samesite="strict",
                secure=self.tls,
                path="/",
            )
            await self._secured(response, scope, receive, send)
            return
        await self._secured(self.app, scope, receive, send)

    def _query_token(self, scope: Scope) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        host = headers.get("host", "").lower()
        if host not in self.allowed_hosts():
            return 403, "unknown Host header (a loopback name or the dashboard's --host only)"
        if scope["type"] == "websocket":
            origin = headers.get("origin", "").lower()
            if origin not in self.origins():
                return 403, "WebSocket from a foreign Origin"
        if not (self._has_cookie(headers) or self._query_token(scope)):
            return 401, "the dashboard's token is missing: open the URL `peers dashboard` printed"
        method = scope.get("method", "GET")
        if scope["type"] == "http" and method not in ("GET", "HEAD"):
            given = headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.csrf.encode()):
                return 403, f"missing or wrong {CSRF_HEADER} header"
        return None

    def _has_cookie(self, headers: Headers) -> bool:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and hmac.compare_digest(
                value.encode(), self.cookie_value.encode()
            ):
                return True
        return False

    async def _secured(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await app(scope, receive, with_headers)


# --------------------------------------------------------------------------- the app


def build(overseer: Overseer, token: str, host: str, tls: bool) -> tuple[Starlette, Guard]:
    guard_ref: list[Guard] = []

    async def index(request: Request) -> Response:
        html = (STATIC / "index.html").read_text()
        html = html.replace("{{csrf}}", guard_ref[0].csrf)
        return Response(html, media_type="text/html; charset=utf-8")

    async def live(ws: WebSocket) -> None:
        await ws.accept()
        queue = overseer.attach()
        closed = asyncio.get_running_loop().create_task(_until_closed(ws))

        async def send(data: str) -> None:
            try:
                await asyncio.wait_for(ws.send_text(data), SEND_TIMEOUT)
            except TimeoutError:
                log.warning("a page read nothing for %gs: hanging up on it", SEND_TIMEOUT)
                ws.scope.get("peers.abort", lambda: None)()
                raise _Slow from None

        try:
            await send(overseer.snapshot().decode())
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=PING, return_when=asyncio.FIRST_COMPLETED
                )
                if closed in done:
                    getter.cancel()
                    break
                if getter not in done:
                    getter.cancel()
                    await send('{"t":"ping"}')
                    continue
                data = getter.result()
                if data is None:  # too far behind: the page reconnects and catches up
                    try:
                        await asyncio.wait_for(ws.close(1013, "too far behind; reconnect"), 1)
                    except TimeoutError:
                        ws.scope.get("peers.abort", lambda: None)()
                    break
                await send(data.decode())
        except (WebSocketDisconnect, RuntimeError, OSError, _Slow, TimeoutError):
            pass
        finally:
            overseer.detach(queue)
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await closed

    async def api(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            body = await _json_body(request)
            result = await _act(overseer, action, body)
        except _BadInput as e:
            return JSONResponse({"error": "bad_request", "message": str(e)}, 400)
        except PeersError as e:
            return JSONResponse(error_body(e), 409 if e.code != "daemon_unreachable" else 503)
        return Response(msgspec.json.encode(result), media_type="application/json")

    async def report(request: Request) -> Response:
        try:
            hours = float(request.query_params.get("hours", "24"))
        except ValueError:
            return PlainTextResponse("hours must be a number\n", 400)
        try:
            text = await overseer.report(time.time() - hours * 3600)
        except PeersError as e:
            return PlainTextResponse(e.message + "\n", 503)
        if text is None:
            return PlainTextResponse("this daemon has no report\n", 404)
        name = time.strftime("peers-report-%Y%m%d-%H%M.md")
        return Response(
            text,
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(overseer.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if overseer.client is not None:
                await overseer.client.aclose()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/report", report),
            Route("/api/{action}", api, methods=["POST"]),
            WebSocketRoute("/live", live),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    guard = Guard(app, token, host, tls)
    guard_ref.append(guard)
    return app, guard


async def _until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the page sends until it hangs up."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


class _Slow(ClaudePeersError):
    """A page did not read an update within ``SEND_TIMEOUT``: it was hung up on."""


class _BadInput(ClaudePeersError, ValueError):
    """A page's request that is not what the API takes (answered 400, with the reason)."""


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _BadInput(f"request body over {MAX_BODY} bytes")
    if not raw:
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise _BadInput(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise _BadInput("body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _BadInput(f"{key!r} must be a non-empty string")
    return value


async def _act(overseer: Overseer, action: str, body: dict[str, Any]) -> Any:
    if action == "send":
        text = _text(body, "text")
        scope = _text(body, "scope", required=False) or None
        to = _text(body, "to", required=scope is None) or None
        if scope not in (None, "machine", "directory", "repo"):
            raise _BadInput("scope must be machine, directory or repo")
        reply_to = _text(body, "reply_to", required=False) or None
        urgent = body.get("urgent") is True
        if urgent:
            text = "URGENT: " + text
        result = await overseer.send_mail(to, scope, text, reply_to)
        if urgent:
            who = result.get("to_name") or scope or "?"
            overseer_notify(f"urgent mail to {clean(str(who))}", clean(text)[:200])
        return result
    if action == "ack":
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadInput("'ids' must be a list of message ids")
        return {"acked": await overseer.ack(ids[:200])}
    if action == "rename":
        return {"peer": await overseer.rename(_text(body, "target"), _text(body, "name"))}
    if action == "kill":
        return {"result": await overseer.kill(_text(body, "target"), body.get("force") is True)}
    if action == "release":
        patterns = body.get("patterns", [])
        if not isinstance(patterns, list) or not all(isinstance(x, str) for x in patterns):
            raise _BadInput("'patterns' must be a list of claim patterns")
        return {"result": await overseer.release(_text(body, "target"), patterns)}
    if action == "search":
        hits = await overseer.search(_text(body, "query"))
        return {"available": hits is not None, "hits": hits or []}
    raise _BadInput(f"unknown action {action!r} (send, ack, rename, kill, release, search)")


_notifiers: set[asyncio.Task[None]] = set()


def overseer_notify(title: str, body: str) -> None:
    """A desktop notification on this machine (notify-send, or osascript on macOS); a
    missing notifier is logged only. The task is kept until it ends."""
    task = asyncio.get_running_loop().create_task(_notify(title, body))
    _notifiers.add(task)
    task.add_done_callback(_notifiers.discard)


async def _notify(title: str, body: str) -> None:
    if sys.platform == "darwin":

        def quoted(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        script = f"display notification {quoted(body)} with title {quoted(title)}"
        argv = ["osascript", "-e", script]
    else:
        argv = ["notify-send", "--app-name=claude-peers", title, body]
    exe = shutil.which(argv[0])
    if exe is None:
        log.info("no desktop notifier (%s); not notifying: %s", argv[0], title)
        return
    proc = await asyncio.create_subprocess_exec(
        exe,
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(proc.wait(), 5.0)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def server_config(guard: Guard, tls_cert: str | None, tls_key: str | None) -> uvicorn.Config:
    """How uvicorn serves the dashboard (``peers dashboard``, and the tests in-process)."""
    return uvicorn.Config(
        guard,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        server_header=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        timeout_graceful_shutdown=3,
        ws_ping_interval=None,
    )


class Server(uvicorn.Server):
    """uvicorn's server, but Ctrl-C and SIGTERM end it with status 0: uvicorn's own
    handlers re-raise the signal once it has shut down (exit 130, or death by SIGTERM)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve_until_signal(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            await self.serve(sockets=[sock])
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


__all__ = ["ConfigError", "Guard", "Server", "build", "is_loopback", "load_token"]
