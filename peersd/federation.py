"""The link to other machines over NATS JetStream, owned by the daemon's task group.

On when ``nats_url`` is set. One task (``run``) connects, with growing pauses between
attempts, and while connected runs four loops in its own task group: publishing the
outbox (``peersd.outbox``) in order, each frame with ``Nats-Msg-Id`` so the stream drops
a second copy; consuming this machine's inbox (a durable pull consumer: a frame is
acknowledged to the stream only after the batch that stored it has committed);
advertising this machine's peers in the directory bucket; watching the bucket
(``peersd.directory``). Stopping cancels and waits for all of them.

Local mail never passes through here: with NATS down, only mail to other machines waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from . import natsconf
from . import protocol as p
from .config import nats_urls
from .directory import Directory, entry
from .errors import Code, ConfigError, PeersError
from .handlers import Effect, Outcome
from .outbox import DECODER, FedMail
from .private_files import read_private_file

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("peersd")

BACKOFF_MAX = 15.0
PUBLISH_TIMEOUT = 5.0
FETCH_BATCH = 256
WINDOW = 64
"""Frames published at once, awaiting their acknowledgements together."""
ACK_WAIT = 30.0


class Federation:
    def __init__(self, d: Daemon) -> None:
        if importlib.util.find_spec("nats") is None or (
            d.settings.nats_creds and importlib.util.find_spec("nkeys") is None
        ):
            raise ConfigError(
                "nats_url is set but the NATS client (nats-py, nkeys) is not installed: "
                "pip install 'claude-peers[federation]'"
            )
        s = d.settings
        self.d = d
        self.node = natsconf.node_name(d.host)
        self.urls = nats_urls(s.nats_url)
        self.ttl = s.nats_directory_ttl
        self.directory = Directory(self.node, self.ttl)
        self.kick = asyncio.Event()
        """Set when the outbox has something new to publish."""
        self.resync = asyncio.Event()
        """Set when the connection came back: restart the directory watch."""
        self.connected = False
        self.error = "not connected yet"
        self.published = 0
        self.received = 0
        self._credentials = self._read_credentials(s.nats_creds)

    @staticmethod
    def _read_credentials(path: str) -> dict[str, Any]:
        if not path:
            return {}
        raw = read_private_file(path, "NATS credentials file", limit=16384, secret=True)
        if raw is None:
            raise ConfigError(f"nats_creds: {path} does not exist")
        if b"BEGIN NATS USER JWT" in raw:
            return {"user_credentials": path}
        if raw.strip().startswith(b"SU"):
            return {"nkeys_seed_str": raw.strip().decode("ascii", "replace")}
        raise ConfigError(
            f"nats_creds: {path} is neither a NATS .creds file nor a user nkey seed (SU…)"
        )

    def status(self) -> p.FederationState:
        return p.FederationState(
            node=self.node,
            servers=self.urls,
            connected=self.connected,
            outbox=self.d.store.outbox.size(),
            machines=len(self.directory.machines()),
            published=self.published,
            received=self.received,
            error="" if self.connected else self.error,
        )

    # ------------------------------------------------------------ requests (in a batch)

    def send(self, sender: p.Peer, r: p.Send, now: float) -> Outcome:
        """``send`` to a peer on another machine: stored here, queued for publishing."""
        d = self.d
        target = self.directory.resolve(r.to)
        if target.pending >= d.settings.queue_limit:
            raise PeersError(
                Code.QUEUE_FULL,
                f"{target.name}@{target.host} already has {target.pending} undelivered messages",
            )
        d.rate_limits.take(sender.id)
        to_name = f"{target.name}@{target.host}"
        msg = d.store.outbox.send(
            sender, target.id, to_name, target.node, r.text, r.reply_to, now, d.settings.message_ttl
        )
        sent = p.Sent(
            id=r.id,
            message_id=msg.id,
            to=target.id,
            to_name=to_name,
            reach="outbox" if not self.connected else "offline" if target.offline else "remote",
            pending=target.pending + 1,
            last_read=target.last_read,
            expires_at=msg.expires_at,
        )
        return Outcome(sent, [self.kick.set, *d.mail_effects(msg)[2:]])

    def network_peers(self) -> list[p.Peer]:
        return self.directory.peers()

    # ------------------------------------------------------------ the link

    async def run(self) -> None:
        import nats

        delay = 0.5
        while not self.d.stopping:  # also if a cancellation was lost (3.11's wait_for)
            try:
                nc = await nats.connect(
                    servers=self.urls,
                    name=f"peersd {self.node}",
                    inbox_prefix=natsconf.inbox_prefix(self.node),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    tls=self._tls(),
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **self._credentials,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.error = f"cannot connect to {', '.join(self.urls)}: {_describe(e)}"
                log.warning("federation: %s; retrying in %.1fs", self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = 0.5
            try:
                await self._session(nc)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.error = _describe(e)
                log.warning("federation: link failed (%s); reconnecting", self.error)
            finally:
                self.connected = False
                await self._close(nc)
            await asyncio.sleep(delay)

    def _tls(self) -> ssl.SSLContext | None:
        ca = self.d.settings.nats_tls_ca
        if not ca and not any(u.startswith("tls://") for u in self.urls):
            return None
        return ssl.create_default_context(cafile=ca or None)

    async def _on_error(self, e: Exception) -> None:
        self.error = _describe(e)
        log.warning("federation: %s", self.error)

    async def _on_disconnected(self) -> None:
        self.connected = False
        self.error = "disconnected from NATS; reconnecting"
        log.warning("federation: disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self.connected = True
        log.info("federation: reconnected to NATS")
        self.resync.set()
        self.kick.set()

    async def _close(self, nc: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2.0)

    async def _session(self, nc: Any) -> None:
        from nats.js import api
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = nc.jetstream()
        try:
            await js.stream_info(natsconf.STREAM)
        except NotFoundError:
            await js.add_stream(
                name=natsconf.STREAM,
                subjects=[natsconf.SUBJECTS],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                max_age=self.d.settings.message_ttl,
                duplicate_window=600.0,
                num_replicas=self.d.settings.nats_replicas,
            )
        try:
            kv = await js.key_value(natsconf.BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=natsconf.BUCKET,
                history=1,
                ttl=self.ttl,
                replicas=self.d.settings.nats_replicas,
            )
        durable = natsconf.consumer(self.node)
        try:
            await js.consumer_info(natsconf.STREAM, durable)
        except NotFoundError:
            await js.add_consumer(
                natsconf.STREAM,
                api.ConsumerConfig(
                    name=durable,
                    durable_name=durable,
                    filter_subject=f"peers.in.{self.node}.>",
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=ACK_WAIT,
                    max_ack_pending=4 * FETCH_BATCH,
                ),
            )
        sub = await js.pull_subscribe_bind(durable=durable, stream=natsconf.STREAM)
        self.connected = True
        self.error = ""
        log.info("federation: connected to %s as %s", nc.connected_url.netloc, self.node)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_loop(js))
                tg.create_task(self._consume_loop(sub))
                tg.create_task(self._advertise_loop(kv))
                tg.create_task(self._watch_loop(kv))
        finally:
            # Leaving: drop out of the directory now rather than when the key expires.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(kv.delete(self.node), 1.0)

    # ------------------------------------------------------------ outbox -> stream

    async def _publish_loop(self, js: Any) -> None:
        outbox = self.d.store.outbox
        delay = 0.2
        while not self.d.stopping:
            self.kick.clear()
            rows = await self._run(lambda: outbox.pending(FETCH_BATCH))
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.kick.wait(), 1.0)
                continue
            done: list[int] = []
            failure: tuple[int, str] | None = None
            # Up to WINDOW in flight on the one connection, which keeps their order; only
            # the prefix the stream acknowledged leaves the outbox. The rest is published
            # again next time (the stream drops copies by Nats-Msg-Id; receivers too).
            for start in range(0, len(rows), WINDOW):
                chunk = rows[start : start + WINDOW]
                acks = await asyncio.gather(
                    *(
                        js.publish(
                            natsconf.inbox(node, self.node),
                            payload,
                            timeout=PUBLISH_TIMEOUT,
                            stream=natsconf.STREAM,
                            headers={"Nats-Msg-Id": f"{self.node}.{kind}.{msg_id}"},
                        )
                        for _, node, kind, msg_id, payload in chunk
                    ),
                    return_exceptions=True,
                )
                for (seq, *_), ack in zip(chunk, acks, strict=True):
                    if isinstance(ack, BaseException):
                        if isinstance(ack, asyncio.CancelledError):
                            raise ack
                        failure = (seq, _describe(ack))
                        break
                    done.append(seq)
                if failure is not None:
                    break
            now = time.time()
            if done:
                self.published += len(done)
                await self._run(functools.partial(outbox.published, done, now))
            if failure is not None:
                seq, why = failure
                self.error = f"publishing failed: {why}"
                log.warning("federation: %s; %d frame(s) wait in the outbox", self.error, len(rows))
                await self._run(functools.partial(outbox.failed, seq, why))
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                delay = 0.2

    async def _run(self, op: Callable[[], Any]) -> Any:
        return await self.d.commit.run(op)

    # ------------------------------------------------------------ stream -> store

    async def _consume_loop(self, sub: Any) -> None:
        import nats.errors

        while not self.d.stopping:
            # A lingering pull returns only with a full batch or at its deadline: wait for
            # one message, then take as many more as it says are waiting behind it.
            try:
                msgs = await sub.fetch(batch=1, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            behind = min(msgs[-1].metadata.num_pending or 0, FETCH_BATCH - 1)
            if behind:
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    msgs += await sub.fetch(batch=behind, timeout=1.0)
            futures = [self._store(m) for m in msgs]  # submitted in one tick: one commit
            results = await asyncio.gather(*futures)
            for m, ok in zip(msgs, results, strict=True):
                if ok:  # stored and committed: the stream may forget it
                    await m.ack()
                    self.received += 1
                else:  # offered again later; if it was stored after all, recognised then
                    await m.nak(delay=1.0)

    def _store(self, m: Any) -> asyncio.Future[bool]:
        """Submit the store operation for stream message ``m``; True once committed."""
        d = self.d
        fut: asyncio.Future[bool] = d.loop.create_future()
        origin = m.subject.rsplit(".", 1)[-1]
        try:
            frame = DECODER.decode(m.data)
        except msgspec.DecodeError as e:
            log.warning("federation: dropped an undecodable frame from %s: %s", origin, e)
            fut.set_result(True)  # acked: it can never be stored
            return fut

        def op() -> list[Effect]:
            now = time.time()
            if isinstance(frame, FedMail):
                # The sender's daemon checked the size against its own max_text: ours rules.
                big = len(frame.text.encode("utf-8", "surrogatepass")) > d.settings.max_text
                recipient = None if big else self._recipient(frame)
                why = "too large for this machine" if big else "no such peer"
                msg = d.store.outbox.receive(origin, frame, recipient, now, why)
                return d.mail_effects(msg) if msg is not None else [self.kick.set]
            settled = d.store.outbox.receipt(origin, frame)
            if settled is None:
                return []
            return d.receipt_effects([settled], frame.state, frame.at, frame.via)

        def done(result: Any) -> None:
            if isinstance(result, PeersError):
                log.warning("federation: could not store a frame from %s: %s", origin, result)
                fut.set_result(False)
                return
            for effect in result:
                effect()
            fut.set_result(True)

        d.commit.submit(op, done)
        return fut

    def _recipient(self, mail: FedMail) -> p.Peer | None:
        store = self.d.store
        peer = store.peer(mail.to)
        if peer is not None and peer.machine_id == self.d.machine_id:
            return peer
        try:
            return store.resolve(mail.to_name, self.d.machine_id)
        except PeersError:
            return None

    # ------------------------------------------------------------ directory

    async def _advertise_loop(self, kv: Any) -> None:
        last: list[p.Peer] | None = None
        written = 0.0
        while not self.d.stopping:
            peers = self._own_peers()
            now = time.monotonic()
            if peers != last or now - written >= self.ttl / 3:
                await kv.put(self.node, entry(self.node, self.d.host, peers, time.time()))
                last, written = peers, now
            await asyncio.sleep(min(1.0, self.ttl / 3))

    def _own_peers(self) -> list[p.Peer]:
        from . import coordination  # imported by handlers, which this module needs first

        d = self.d
        local = d.store.list_peers(None, "machine", machine_id=d.machine_id)
        return coordination.decorate(d, local)  # copies, with status and reach

    async def _watch_loop(self, kv: Any) -> None:
        import nats.errors

        while not self.d.stopping:
            self.resync.clear()
            watcher = await kv.watchall()
            try:
                while not self.resync.is_set() and not self.d.stopping:
                    try:
                        e = await watcher.updates(timeout=1.0)
                    except nats.errors.TimeoutError:
                        continue
                    if e is None:
                        continue
                    deleted = e.operation in ("DEL", "PURGE")
                    self.directory.update(e.key, None if deleted else e.value)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text
