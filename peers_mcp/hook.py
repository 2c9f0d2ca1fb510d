"""``peers-hook``: one command for every hook event of Claude Code and Codex.

It reads the hook's JSON from stdin, finds this session's peer (``Attach`` with the
hook's ``session_id``; the daemon falls back to the hook process's ancestry, which
reaches the agent) and, when it has mail, runs the one delivery routine
(``peers_mcp.delivery.deliver``): lease the queued mail (``Claim``), render what fits
in ``render.HOOK_BUDGET`` characters (a message too long for it is shown cut, with the
``check_messages`` call that reads on), print it, flush, and only then acknowledge
exactly the messages shown (``Ack`` via "hook") and release the rest at once. A hook
killed between claim and acknowledgement leaves its lease to run out, and the mail is
delivered again. When the acknowledgement's answer is lost (a time-out, a hang-up) the
daemon may have done it, so the idle wake shows the mail anyway (exit 2): shown twice
beats marked read unseen.

Output per ``hook_event_name``:

- SessionStart, UserPromptSubmit, PostToolUse:
  ``{"hookSpecificOutput": {"hookEventName": E, "additionalContext": text}}``
- Stop: the session must answer before it idles. Claude Code (>= 2.1.163):
  ``{"hookSpecificOutput": {"hookEventName": "Stop", "additionalContext": text}}``,
  which continues the conversation with the mail shown once (a blocking ``reason`` is
  shown twice: "Stop hook feedback" and "Stop hook blocking error"). Codex and any
  other client: ``{"decision": "block", "reason": text}`` (Codex has no context at
  Stop; the reason becomes the continuation prompt, shown once). With
  ``stop_hook_active`` true nothing is claimed or printed (loop guard).
- PreToolUse of an edit tool: a warning or a denial when another session holds the
  file (``filehook``, ``docs/coordination.md``); mail is not claimed.
- anything else (SessionEnd, …), and any event from inside a subagent (``agent_id``
  present): nothing, and nothing is claimed.

Before the mail, ``filehook`` records the files an edit tool touched (PostToolUse) and
the session's status (UserPromptSubmit: working; Stop: idle).

No mail means no output. The daemon is never started from here; when it is down,
the session unknown, the input malformed or anything else fails, the hook exits 0
with nothing on stdout and appends one line to ``<run dir>/peers-hook.log`` (the run
dir is the socket's directory; the file is created 0600 and rotated at 1 MiB). The
session is never broken and the mail waits.

``peers-hook --wait`` is the idle wake, for an async Stop hook with ``asyncRewake``:
it attaches, subscribes to mail events (doorbells) and blocks on the socket until mail
for this session arrives (or delivers at once if some is queued), then runs the same
delivery routine, writing to stderr (via "wake"), and exits 2, which makes Claude
Code wake the idle session with it. One waiter per session (an flock on
``<run dir>/peers-hook-wait.<peer id>.lock``; a second one exits 0 at once). It exits
0 without output when the session's agent process is gone (checked every
``--check-interval`` seconds, with a ``whoami``: a waiter whose peer was unbound, by an
unregister from elsewhere or the peer marked gone, attaches again once the session is
registered again), when the daemon goes away and does not come back
within ``--reconnect-window`` seconds, or after ``--max-wait`` seconds (default one
hour) so the next Stop re-arms it. A waiter that starts before ``peers-mcp`` has
registered its session (Claude Code connects MCP servers in the background, so a quick
first turn can end first) waits up to ``REGISTER_WINDOW`` seconds for the registration.
In a Claude Code session in print mode (``claude -p``) it exits 0 at once: that process
ends with its turn and has no idle time to wake from; it would wait about 30 s for the
waiter before exiting and drop what the waiter shows then, so mail arriving after the
last turn would be marked read unseen. It waits queued for the next session instead.

Speed: this runs after every tool call. The no-mail path imports only ``peersd.wire``
(a client built on the C modules ``_socket`` and ``_struct``; no asyncio, msgspec or
``peersd.protocol``) and ``_json`` (the json package would import ``re``), answers in
one round trip when the peer has nothing pending, loads ``delivery`` and ``render``
only when there is mail, and as a command ends with ``os._exit`` after flushing
(interpreter teardown costs about 2 ms). The pip-generated ``peers-hook`` wrapper
itself imports ``re`` (~6 ms, as much as the rest of the hook together); a hook
command of the form
``<venv>/bin/python -c "from peers_mcp.hook import main; main()"`` avoids that.

Other clients: ``--client NAME`` (``gemini``, ``cursor``) hands the input to ``adapters``,
which maps that client's events and output fields onto the ones above. Without it, an input that
does not look like Claude Code's or Codex's (no ``session_id``, or Cursor's keys: Cursor
can run the hooks in ``~/.claude/settings.json``, ``--wait`` too) is ignored before any
connection.

Options: ``--wait``, ``--client NAME``, ``--server-name NAME`` (the MCP server's name in
the client's config, for the reply instruction), ``--socket PATH``, ``--config FILE``, and
for ``--wait`` also ``--max-wait S``, ``--check-interval S``, ``--reconnect-window S``.

Test knob: the environment variable ``CLAUDE_PEERS_TEST_HOOK_PAUSE_BEFORE_ACK`` (seconds)
makes the hook sleep after its output is flushed and before it acknowledges, so tests
can observe the order and kill a hook between claim and acknowledgement. It has no
other use; leave it unset.
"""

import os
import sys
import time

from peersd import __version__, wire
from peersd.errors import ClaudePeersError, Code

try:  # the C half of the json package, without the package (and the ``re`` it imports)
    import _json
except ImportError:  # pragma: no cover - not CPython
    _json = None  # type: ignore[assignment]

CONTEXT_EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse")
FILE_EVENTS = ("PostToolUse", "UserPromptSubmit", "Stop")
CLAIM_LIMIT = 50
REQUEST_TIMEOUT = 3.0
"""Seconds to wait for the daemon before giving up (the mail then waits)."""
MAX_WAIT = 3600.0
CHECK_INTERVAL = 3.0
RECONNECT_WINDOW = 10.0
REGISTER_WINDOW = 30.0
"""Seconds ``--wait`` waits for its session to be registered (Claude Code's MCP startup
timeout): a first turn may end before ``peers-mcp`` has registered the session."""
LOG_NAME = "peers-hook.log"
LOG_LIMIT = 1024 * 1024
PAUSE_ENV = "CLAUDE_PEERS_TEST_HOOK_PAUSE_BEFORE_ACK"
SERVER_NAME = "claude-peers"  # = render.SERVER_NAME, without importing render

USAGE = """\
usage: peers-hook [--wait] [--client NAME] [--server-name NAME] [--socket PATH] [--config FILE]
                  [--max-wait S] [--check-interval S] [--reconnect-window S]

Delivers claude-peers mail into a Claude Code or Codex session from its hooks. Reads
the hook JSON on stdin. Always exits 0 (nothing printed) when there is nothing to
deliver or anything fails; see <run dir>/peers-hook.log. With --wait (an async Stop
hook with asyncRewake) it waits for mail and exits 2 with the mail on stderr.
"""


class Usage(ClaudePeersError):
    pass


class Options:
    __slots__ = (
        "check_interval",
        "client",
        "config",
        "max_wait",
        "reconnect_window",
        "server_name",
        "socket",
        "wait",
    )

    def __init__(self) -> None:
        self.wait = False
        self.server_name = SERVER_NAME
        self.socket: str | None = None
        self.config: str | None = None
        self.max_wait = MAX_WAIT
        self.check_interval = CHECK_INTERVAL
        self.reconnect_window = RECONNECT_WINDOW
        self.client: str | None = None


_VALUED = {
    "--client": ("client", str),
    "--server-name": ("server_name", str),
    "--socket": ("socket", str),
    "--config": ("config", str),
    "--max-wait": ("max_wait", float),
    "--check-interval": ("check_interval", float),
    "--reconnect-window": ("reconnect_window", float),
}


def parse_args(argv: list[str]) -> Options:
    """A hand parser: argparse (and gettext) would cost milliseconds on every tool call."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg == "--wait":
            opts.wait = True
        elif name in _VALUED:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise Usage(f"{name} needs a value")
            attr, kind = _VALUED[name]
            try:
                converted = kind(value)
            except ValueError:
                raise Usage(f"{name}: invalid value {value!r}") from None
            if kind is float and not converted > 0:
                raise Usage(f"{name} must be positive")
            setattr(opts, attr, converted)
        else:
            raise Usage(f"unknown argument {arg!r}")
        i += 1
    return opts


# --------------------------------------------------------------------------- logging


class Log:
    """One line per failure in ``<run dir>/peers-hook.log``; never raises."""

    def __init__(self) -> None:
        self.run_dir: str | None = None
        self.context = ""

    def __call__(self, message: str) -> None:
        try:
            run_dir = self.run_dir or _default_run_dir()
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            path = os.path.join(run_dir, LOG_NAME)
            try:
                if os.stat(path).st_size > LOG_LIMIT:
                    os.replace(path, path + ".1")
            except FileNotFoundError:
                pass
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            line = f"{stamp} pid {os.getpid()} {self.context}: {message}".replace("\n", " ")
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except Exception:
            pass


def _default_run_dir() -> str:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".claude", "run")


# --------------------------------------------------------------------------- JSON


class _ScannerContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder`` (its defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


_scan = _json.make_scanner(_ScannerContext()) if _json is not None else None  # type: ignore[arg-type]
_WHITESPACE = " \t\n\r"


def json_loads(raw: bytes) -> object:
    """``json.loads`` for one UTF-8 document, without importing ``json`` (nor ``re``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if _scan is None or not text or text.startswith("\ufeff"):
        import json

        return json.loads(raw)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value at char {e.value}") from None
    except SystemError:  # the C scanner on some malformed objects ("{]"), without json
        raise ValueError("malformed JSON") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data at char {end}")
    return value


def json_string(text: str) -> str:
    """``json.dumps(text)``: a quoted, ASCII-only JSON string."""
    if _json is not None:
        return _json.encode_basestring_ascii(text)
    import json  # pragma: no cover - not CPython

    return json.dumps(text)  # pragma: no cover


def hook_output(event: str, text: str, client: str | None = None) -> str:
    """The JSON line for ``event`` (formatted as ``json.dumps`` would).

    Stop in Claude Code carries the mail as ``additionalContext`` (the session goes on
    and the model sees it once); a blocking ``reason`` would be shown twice there.
    Other clients (Codex) have no context at Stop: the reason is the continuation.
    """
    if event == "Stop" and client != "claude-code":
        return '{"decision": "block", "reason": ' + json_string(text) + "}\n"
    return (
        '{"hookSpecificOutput": {"hookEventName": '
        + json_string(event)
        + ', "additionalContext": '
        + json_string(text)
        + "}}\n"
    )


# --------------------------------------------------------------------------- shared steps


def read_input() -> dict[str, object]:
    stdin = sys.stdin
    raw = b"" if stdin is None or stdin.isatty() else stdin.buffer.read()
    if not raw.strip():
        raise ValueError("no hook JSON on stdin")
    try:
        data = json_loads(raw)
    except ValueError as e:
        raise ValueError(f"hook input is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("hook input is not a JSON object")
    return data


def connect(opts: Options, log: Log) -> wire.Wire:
    """Connect to the daemon (or hub) this session uses; never starts one."""
    if opts.socket:
        path, token, cafile = os.path.abspath(opts.socket), None, None
    else:
        path, token, cafile = wire.locate(config=opts.config)
    # A hub URL has no directory of its own: logs and locks stay in the local run dir.
    log.run_dir = None if path.startswith(("tcp://", "tls://")) else os.path.dirname(path)
    return wire.Wire(
        path, REQUEST_TIMEOUT, kind="hook", token=token, cafile=cafile, config=opts.config
    )


def attach_request(session_id: object) -> dict[str, object]:
    """``attach`` as this session: by its id when the client gave one, else by ancestry."""
    req: dict[str, object] = {"t": "attach"}
    if isinstance(session_id, str) and session_id:
        req["session_id"] = session_id
    return req


def attach(opts: Options, log: Log, session_id: object) -> tuple[wire.Wire, dict[str, object]]:
    """Connect (never starting the daemon) and act as this session's peer."""
    conn = connect(opts, log)
    try:
        peer = conn.call(attach_request(session_id))["peer"]
        if not isinstance(peer, dict):
            raise wire.WireError("attach answered without a peer", Code.BAD_FRAME)
    except BaseException:
        conn.close()
        raise
    return conn, peer


class Mailbox:
    """This session's mail over a ``wire.Wire``, for ``delivery.deliver``."""

    __slots__ = ("conn",)

    def __init__(self, conn: wire.Wire) -> None:
        self.conn = conn

    def claim(self, limit: int, filters: dict[str, object]) -> list[dict[str, object]]:
        msgs = self.conn.call({"t": "claim", "limit": limit, **filters})["messages"]
        if not isinstance(msgs, list):
            raise wire.WireError("claim answered without a message list", Code.BAD_FRAME)
        return [wire.message(m) for m in msgs]

    def ack(self, ids: list[str], via: str) -> None:
        self.conn.call({"t": "ack", "message_ids": ids, "via": via})

    def release(self, ids: list[str]) -> None:
        if self.conn.sock is not None:
            self.conn.call({"t": "release", "message_ids": ids})


def pause_before_ack() -> None:
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


def write_all(stream: object, text: str) -> None:
    """Write and flush ``text`` (UTF-8 whatever the locale); raises if it cannot.

    On failure (the reader hung up) the stream's descriptor is pointed at /dev/null,
    so the unwritten rest cannot fail again at exit and turn the exit code into 120.
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise OSError("output stream is closed")
    try:
        buffer.write(text.encode("utf-8", "replace"))
        buffer.flush()
    except BaseException:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, buffer.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
        raise


# --------------------------------------------------------------------------- the hook


def run_hook(opts: Options, log: Log) -> int:
    try:
        data = read_input()
    except (ValueError, OSError) as e:
        log.context = "hook"
        log(str(e))
        return 0
    output = hook_output
    if opts.client:
        from . import adapters  # another client's events and output fields (Gemini CLI, …)

        adapted = adapters.adapt(opts.client, data, log)
        if adapted is None:
            return 0
        data, output = adapted  # type: ignore[assignment]  # (no typing import here)
    elif not claude_or_codex(data):
        return 0  # someone else's payload (Cursor runs Claude Code's hooks): not ours to read
    event = data.get("hook_event_name")
    session_id = data.get("session_id")
    log.context = f"{event} session {session_id}"
    if event == "PreToolUse" or (event == "PostToolUse" and data.get("agent_id")):
        from . import filehook  # who is touching what: an edit about to happen, a subagent's

        return filehook.alone(opts, log, data)
    if event not in CONTEXT_EVENTS and event != "Stop":
        return 0
    # The Stop that ends a turn a Stop hook continued: the session goes idle now (said
    # below, so the daemon may wake it), but no mail here, or it would never stop.
    continued = event == "Stop" and bool(data.get("stop_hook_active"))
    if data.get("agent_id"):
        return 0  # inside a subagent: keep the mail for the main conversation
    try:
        conn, peer = attach(opts, log, session_id)
    except Exception as e:
        if not (event == "SessionStart" and getattr(e, "code", "") == Code.UNKNOWN_PEER):
            log(_describe(e))  # at SessionStart the session's server has not registered yet
        return 0
    with conn:
        if event in FILE_EVENTS:
            from . import filehook  # who is touching what: edits made, the session's status

            filehook.after_attach(conn, log, data)
        if continued or not peer.get("pending"):
            return 0
        try:
            from . import delivery, render

            def show(plan: delivery.Plan) -> None:
                if opts.client:  # another client's output fields (adapters)
                    write_all(sys.stdout, output(str(event), plan.text))
                else:
                    write_all(sys.stdout, hook_output(str(event), plan.text, _client(peer)))
                pause_before_ack()

            plan = delivery.deliver(
                Mailbox(conn),
                show,
                "hook",
                CLAIM_LIMIT,
                budget=render.HOOK_BUDGET,
                server=opts.server_name,
                client=_client(peer),
            )
            if event == "Stop" and plan is not None and plan.shown:
                # The mail keeps the session going: it is not idle (no wake for more mail).
                conn.call({"t": "set_status", "state": "working"})
        except Exception as e:
            # Not shown: released. Shown but not acknowledged: the lease runs out and
            # the mail comes again.
            log(_describe(e))
    return 0


FOREIGN_KEYS = (
    "conversation_id",
    "cursor_version",
    "generation_id",
    "loop_count",
    "stop_reason",
    "tool_result",
    "initial_prompt",
)
"""Keys of Cursor's hook input and of Copilot CLI's PascalCase one (which has ``session_id``
and ``hook_event_name`` like Claude Code's), which Claude Code and Codex never send."""


def claude_or_codex(data: dict[str, object]) -> bool:
    """Whether a hook input has the shape Claude Code and Codex give (without ``--client``).

    Cursor can run the hooks in ``~/.claude/settings.json`` with its own input; such a
    payload (no ``session_id``, Cursor's keys) is ignored before any connection is made.
    """
    session_id = data.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return False
    return not any(key in data for key in FOREIGN_KEYS)


def _client(peer: object) -> str | None:
    client = peer.get("client") if isinstance(peer, dict) else None
    return client if isinstance(client, str) else None


def _describe(e: BaseException) -> str:
    if isinstance(e, wire.WireError):
        return f"{e.code}: {e.message}"
    return f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- --wait


PRINT_FLAGS = ("-p", "--print")


def print_mode(agent_pid: object) -> bool:
    """Whether the agent is Claude Code in print mode (``claude -p`` / ``--print``)."""
    from peersd import identity

    if not isinstance(agent_pid, int):
        return False
    return any(arg in PRINT_FLAGS for arg in identity.process_cmdline(agent_pid)[1:])


class Waiter:
    """The idle wake: block until mail for this session arrives, show it, exit 2."""

    def __init__(self, opts: Options, log: Log, session_id: object) -> None:
        self.opts = opts
        self.log = log
        self.session_id = session_id
        self.conn: wire.Wire | None = None
        self.peer: dict[str, object] = {}
        self.lock_fd: int | None = None
        self.lock_path = ""

    def run(self) -> int:
        from peersd import identity

        opts = self.opts
        try:
            self.conn, self.peer = self.first_attach()
        except Exception as e:
            self.log(_describe(e))
            return 0
        try:
            if self.peer.get("client") == "claude-code" and print_mode(self.peer.get("agent_pid")):
                # ``claude -p`` ends with its turn: there is no idle session to wake, and it
                # waits (about 30 s) for this hook before exiting. Mail shown after its last
                # turn would be acknowledged but never read; it stays queued instead.
                return 0
            if not self.lock():
                return 0  # another waiter serves this session
            self.conn.call({"t": "subscribe", "kinds": ["mail"]})
            agent_pid = int(self.peer["agent_pid"])  # type: ignore[call-overload]
            agent_start = float(self.peer["agent_start"])  # type: ignore[arg-type]
            deadline = time.monotonic() + opts.max_wait
            next_check = time.monotonic() + opts.check_interval
            need_claim = True
            while True:
                try:
                    if need_claim:
                        need_claim = False
                        shown = self.deliver()
                        if shown is not None:
                            return shown
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return 0
                    now = time.monotonic()
                    if now >= next_check:
                        if not identity.is_alive(agent_pid, agent_start):
                            self.session_over()
                            return 0
                        bound = self.rebind()
                        if bound is False:
                            return 0  # the session is another peer now: its next Stop arms one
                        now = time.monotonic()
                        next_check = now + opts.check_interval
                        if bound is None:
                            need_claim = True  # bound again: mail may have come meanwhile
                            continue
                    event = self.conn.next_event(max(0.0, min(next_check - now, left)))
                except wire.Closed:
                    if not self.reconnect(deadline, agent_pid, agent_start):
                        return 0
                    need_claim = True
                    continue
                if event is None:
                    continue
                if event.get("t") == "ev_mail":
                    need_claim = True  # a doorbell: the mail itself is claimed
        except Exception as e:
            self.log(f"--wait: {_describe(e)}")
            return 0
        finally:
            if self.conn is not None:
                self.conn.close()

    def first_attach(self) -> tuple[wire.Wire, dict[str, object]]:
        """Attach, waiting up to ``REGISTER_WINDOW`` for the session to register.

        Claude Code connects MCP servers in the background: a session's first turn can
        end, and this hook start, before ``peers-mcp`` has registered the session.
        """
        deadline = time.monotonic() + REGISTER_WINDOW
        while True:
            try:
                return attach(self.opts, self.log, self.session_id)
            except wire.WireError as e:
                if e.code != Code.UNKNOWN_PEER or time.monotonic() >= deadline:
                    raise
            time.sleep(0.25)

    def rebind(self) -> bool | None:
        """Make sure this connection still acts as the session's peer: True if it does,
        None if it had stopped and acts as it again (mail may have come meanwhile), False
        if the session is another peer now.

        The daemon unbinds a peer's connections when the peer is unregistered from
        elsewhere or marked gone; a waiter no longer bound gets no doorbells. A gone
        session that has not registered again yet stays unbound until a later check.
        """
        assert self.conn is not None
        try:
            self.conn.call({"t": "whoami"})
            return True
        except wire.WireError as e:
            if e.code != Code.NOT_REGISTERED:
                raise
        try:
            peer = self.conn.call(attach_request(self.session_id))["peer"]
        except wire.WireError as e:
            if e.code != Code.UNKNOWN_PEER:
                raise
            return True  # not registered again yet: look again at the next check
        if not isinstance(peer, dict) or peer.get("id") != self.peer.get("id"):
            return False
        return None

    def session_over(self) -> None:
        """The agent is gone, so no waiter will come for this peer again: drop the lock file."""
        if self.lock_path:
            try:  # noqa: SIM105 - no contextlib import on the hook's path
                os.unlink(self.lock_path)
            except OSError:
                pass

    def lock(self) -> bool:
        import fcntl

        peer_id = str(self.peer.get("id", ""))
        safe = "".join(c for c in peer_id if c.isalnum() or c in "-_") or "unknown"
        run_dir = self.log.run_dir or _default_run_dir()
        path = os.path.join(run_dir, f"peers-hook-wait.{safe}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        self.lock_path = path
        return True

    def deliver(self) -> int | None:
        """Claim and show what is waiting: 2 once shown, None to keep waiting."""
        from . import delivery, render

        assert self.conn is not None

        def show(plan: delivery.Plan) -> None:
            write_all(sys.stderr, plan.text + "\n")
            pause_before_ack()

        try:
            plan = delivery.deliver(
                Mailbox(self.conn),
                show,
                "wake",
                CLAIM_LIMIT,
                budget=render.HOOK_BUDGET,
                server=self.opts.server_name,
                client=_client(self.peer),
            )
        except delivery.Unsettled as e:
            self.log(f"--wait: {e}")
            # Acknowledged (only the rest's release failed), or maybe (the ack's answer
            # was lost: a time-out, a hang-up): wake with it, since it may never come
            # again. Refused: exit 0 so the text is not shown; the mail comes again.
            return 2 if e.acked or e.maybe_acked else 0
        return 2 if plan is not None and plan.shown else None

    def reconnect(self, deadline: float, agent_pid: int, agent_start: float) -> bool:
        """The daemon went away: wait up to the reconnect window for it to come back."""
        from peersd import identity

        if self.conn is not None:
            self.conn.close()
        until = min(deadline, time.monotonic() + self.opts.reconnect_window)
        while time.monotonic() < until:
            time.sleep(0.2)
            if not identity.is_alive(agent_pid, agent_start):
                self.session_over()
                return False
            try:
                conn, peer = attach(self.opts, self.log, self.session_id)
            except wire.Closed:
                continue
            if peer.get("id") != self.peer.get("id"):
                conn.close()
                return False
            try:
                conn.call({"t": "subscribe", "kinds": ["mail"]})
            except wire.Closed:
                continue
            self.conn = conn
            return True
        self.log("--wait: peersd went away")
        return False


# --------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> int:
    """Run as the ``peers-hook`` command (``argv`` None): exits without interpreter
    teardown, which would cost about 2 ms per hook. Given ``argv``: returns the code."""
    rc = run(sys.argv[1:] if argv is None else argv)
    if argv is not None:
        return rc
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(rc)


def run(args: list[str]) -> int:
    log = Log()
    log.context = "hook"
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    if "--version" in args:
        sys.stdout.write(f"peers-hook {__version__}\n")
        return 0
    try:
        opts = parse_args(args)
    except Usage as e:
        log(f"bad arguments: {e}")
        sys.stderr.write(f"peers-hook: {e}\n{USAGE}")
        return 0
    try:
        if opts.wait:
            try:
                data = read_input()
            except (ValueError, OSError) as e:
                log.context = "--wait"
                log(f"{e}; finding the session by process ancestry")
                data = {}
            if data and not claude_or_codex(data):
                return 0  # someone else's payload (Cursor runs Claude Code's hooks, this too)
            log.context = f"--wait session {data.get('session_id')}"
            return Waiter(opts, log, data.get("session_id")).run()
        return run_hook(opts, log)
    except (Exception, KeyboardInterrupt) as e:  # never break the session
        log(f"unexpected {_describe(e)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
