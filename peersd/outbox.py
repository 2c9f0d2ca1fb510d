"""Federation's durable half: mail to and from other machines, in the local store.

Mail to a peer on another machine is one row in ``messages`` (so ``message_status`` and
``history`` work as for local mail) plus a row in ``fed_outbox`` holding the frame to
publish, written in the same transaction: the sender has its id only once both are
committed. ``peersd.federation`` publishes the outbox in order and deletes what the
stream acknowledged; whatever it could not publish (NATS down) simply stays.

Mail from another machine is inserted once per (origin machine, message id):
``fed_received`` remembers each, so a frame published twice (a crash between publish and
delete, a redelivery after a crash between commit and stream ack) is stored once. When
the recipient acknowledges it, a receipt for the origin joins the outbox, again in the
same transaction as the acknowledgement.

Like ``Store``, every method is synchronous and runs inside a group-commit batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from .protocol import Message, Peer

if TYPE_CHECKING:
    from .store import Store

MIGRATION = """
CREATE TABLE fed_outbox(
    seq INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mail', 'receipt')),
    message_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE fed_sent(
    seq INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    published_at REAL
);
CREATE TABLE fed_received(
    origin TEXT NOT NULL,
    origin_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (origin, origin_id)
) WITHOUT ROWID;
CREATE INDEX fed_received_seq ON fed_received(seq);
"""


# ----------------------------------------------------------------- frames between daemons
# msgpack on the mail stream (subject peers.in.<target node>.<origin node>). The origin
# is the subject's last token, which only that machine's NATS user may publish to.


class FedMail(msgspec.Struct, tag="mail", forbid_unknown_fields=False, omit_defaults=True):
    id: str
    """The sender's message id (its database's), the de-duplication key."""
    sender: str
    sender_name: str
    sender_host: str
    to: str
    """The recipient's peer id on the target machine, from the directory."""
    to_name: str
    text: str
    created: float
    expires_at: float
    sender_client: str = ""
    sender_branch: str | None = None
    reply_to: str | None = None


class FedReceipt(msgspec.Struct, tag="receipt", forbid_unknown_fields=False, omit_defaults=True):
    id: str
    """The message id on the machine the receipt goes back to."""
    state: Literal["delivered", "expired"]
    at: float
    via: str | None = None


FedFrame = FedMail | FedReceipt
ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(FedFrame)

Pending = tuple[int, str, str, str, bytes]
"""An outbox row: (seq, target node, kind, message id, payload)."""


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ sending

    def send(
        self,
        sender: Peer,
        to: str,
        to_name: str,
        node: str,
        text: str,
        reply_to: str | None,
        now: float,
        ttl: float,
    ) -> Message:
        """Store mail for peer ``to`` on machine ``node`` and queue it for publishing.

        Three rows in one savepoint (``send`` runs without one of its own: a local send is
        one statement), so a failure leaves none of them."""
        with self.store.conn:
            msg = self._send(sender, to, to_name, node, text, reply_to, now, ttl)
        return msg

    def _send(
        self,
        sender: Peer,
        to: str,
        to_name: str,
        node: str,
        text: str,
        reply_to: str | None,
        now: float,
        ttl: float,
    ) -> Message:
        conn = self.store.conn
        if reply_to is not None:
            reply_to = self.store.canonical_id(reply_to)
        conn.execute(
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, "
            "created, state, expires_at, reply_to) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (sender.id, sender.name, to, to_name, text, now, now + ttl, reply_to),
        )
        seq = conn.last_insert_rowid()
        msg_id = self.store.message_id(seq)
        conn.execute("INSERT INTO fed_sent(seq, node) VALUES (?, ?)", (seq, node))
        frame = FedMail(
            id=msg_id,
            sender=sender.id,
            sender_name=sender.name,
            sender_host=sender.host,
            to=to,
            to_name=to_name.partition("@")[0],
            text=text,
            created=now,
            expires_at=now + ttl,
            sender_client=sender.client,
            sender_branch=sender.branch,
            reply_to=self._origin_id(reply_to, node),
        )
        self._queue(node, "mail", msg_id, ENCODER.encode(frame), now)
        return Message(
            id=msg_id,
            sender=sender.id,
            sender_name=sender.name,
            recipient=to,
            recipient_name=to_name,
            text=text,
            created=now,
            state="queued",
            expires_at=now + ttl,
            reply_to=reply_to,
            sender_client=sender.client,
            sender_cwd=sender.cwd,
            sender_branch=sender.branch,
            sender_host=sender.host,
        )

    def _origin_id(self, reply_to: str | None, node: str) -> str | None:
        """A reply to mail that came from ``node`` names the message by ``node``'s id."""
        seq = self.store.parse_id(reply_to) if reply_to else None
        if seq is None:
            return reply_to
        row = self.store.conn.execute(
            "SELECT origin, origin_id FROM fed_received WHERE seq = ?", (seq,)
        ).fetchone()
        return str(row[1]) if row is not None and row[0] == node else reply_to

    def _queue(self, node: str, kind: str, msg_id: str, payload: bytes, now: float) -> None:
        self.store.conn.execute(
            "INSERT INTO fed_outbox(node, kind, message_id, payload, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (node, kind, msg_id, payload, now),
        )

    def pending(self, limit: int) -> list[Pending]:
        """The oldest ``limit`` frames waiting to be published, in order."""
        return [
            (int(seq), str(node), str(kind), str(mid), bytes(payload))
            for seq, node, kind, mid, payload in self.store.conn.execute(
                "SELECT seq, node, kind, message_id, payload FROM fed_outbox ORDER BY seq LIMIT ?",
                (limit,),
            )
        ]

    def published(self, seqs: list[int], now: float) -> None:
        """The stream acknowledged these outbox rows: they leave the outbox."""
        conn = self.store.conn
        for seq in seqs:
            row = conn.execute(
                "DELETE FROM fed_outbox WHERE seq = ? RETURNING kind, message_id", (seq,)
            ).fetchone()
            if row is not None and row[0] == "mail":
                mseq = self.store.parse_id(str(row[1]))
                conn.execute("UPDATE fed_sent SET published_at = ? WHERE seq = ?", (now, mseq))

    def failed(self, seq: int, error: str) -> None:
        self.store.conn.execute(
            "UPDATE fed_outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
            (error[:300], seq),
        )

    def size(self) -> int:
        row = self.store.conn.execute("SELECT count(*) FROM fed_outbox").fetchone()
        return int(row[0]) if row is not None else 0

    def where(self, msg_id: str) -> str | None:
        """For our mail to another machine: ``outbox`` (not yet in the stream) or
        ``published``; None for local mail."""
        seq = self.store.parse_id(msg_id)
        if seq is None:
            return None
        row = self.store.conn.execute(
            "SELECT node, published_at FROM fed_sent WHERE seq = ?", (seq,)
        ).fetchone()
        if row is None:
            return None
        return f"published to {row[0]}" if row[1] is not None else f"outbox for {row[0]}"

    # ------------------------------------------------------------ receiving

    def receive(
        self,
        origin: str,
        mail: FedMail,
        recipient: Peer | None,
        now: float,
        refused: str = "no such peer",
    ) -> Message | None:
        """Store mail from machine ``origin`` for ``recipient``; None if it was stored
        before (a duplicate) or not taken (no recipient here: a receipt says it expired,
        with ``refused`` as its ``via``)."""
        conn = self.store.conn
        seen = conn.execute(
            "SELECT 1 FROM fed_received WHERE origin = ? AND origin_id = ?", (origin, mail.id)
        ).fetchone()
        if seen is not None:
            return None
        if recipient is None:
            conn.execute(
                "INSERT INTO fed_received(origin, origin_id, seq) VALUES (?, ?, 0)",
                (origin, mail.id),
            )
            self.receipt_for(origin, mail.id, "expired", now, refused)
            return None
        sender_name = f"{mail.sender_name}@{mail.sender_host}"
        conn.execute(
            "INSERT INTO messages(sender, sender_name, recipient, recipient_name, text, "
            "created, state, expires_at, reply_to) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (
                mail.sender,
                sender_name,
                recipient.id,
                recipient.name,
                mail.text,
                mail.created,
                max(mail.expires_at, now + 60.0),
                mail.reply_to,
            ),
        )
        seq = conn.last_insert_rowid()
        conn.execute(
            "INSERT INTO fed_received(origin, origin_id, seq) VALUES (?, ?, ?)",
            (origin, mail.id, seq),
        )
        self.store._add_pending(recipient.id, 1)
        return Message(
            id=self.store.message_id(seq),
            sender=mail.sender,
            sender_name=sender_name,
            recipient=recipient.id,
            recipient_name=recipient.name,
            text=mail.text,
            created=mail.created,
            state="queued",
            expires_at=max(mail.expires_at, now + 60.0),
            reply_to=mail.reply_to,
            sender_client=mail.sender_client,
            sender_branch=mail.sender_branch,
            sender_host=mail.sender_host,
        )

    def receipt_for(
        self, origin: str, origin_id: str, state: str, at: float, via: str | None
    ) -> None:
        frame = FedReceipt(id=origin_id, state=state, at=at, via=via)  # type: ignore[arg-type]
        self._queue(origin, "receipt", origin_id, ENCODER.encode(frame), at)

    def settled(self, seqs: list[int], state: str, at: float, via: str | None) -> int:
        """Receipts for those of ``seqs`` that came from another machine; how many."""
        if not seqs:
            return 0
        marks = ",".join("?" * len(seqs))
        rows = list(
            self.store.conn.execute(
                f"SELECT origin, origin_id FROM fed_received WHERE seq IN ({marks})", seqs
            )
        )
        for origin, origin_id in rows:
            self.receipt_for(str(origin), str(origin_id), state, at, via)
        return len(rows)

    def receipt(self, origin: str, r: FedReceipt) -> Message | None:
        """A receipt from machine ``origin`` for our mail: the message it settles, or
        None (not ours, not sent to ``origin``, or settled already)."""
        seq = self.store.parse_id(r.id)
        if seq is None:
            return None
        conn = self.store.conn
        row = conn.execute("SELECT node FROM fed_sent WHERE seq = ?", (seq,)).fetchone()
        if row is None or row[0] != origin:
            return None
        conn.execute(
            "UPDATE messages SET state = ?, delivered_at = ?, delivered_via = ?, "
            "lease_until = NULL WHERE seq = ? AND state IN ('queued', 'leased')",
            (r.state, r.at if r.state == "delivered" else None, r.via, seq),
        )
        if not conn.changes():
            return None
        found = self.store.messages_by_seqs([seq])
        return found[0] if found else None

    def expire_sent(self, now: float, grace: float) -> list[Message]:
        """Our mail to other machines still unsettled ``grace`` seconds past its expiry
        (the machine never came back, or its receipt was lost): expired here too."""
        conn = self.store.conn
        seqs = [
            int(r[0])
            for r in conn.execute(
                "UPDATE messages SET state = 'expired', lease_until = NULL "
                "WHERE seq IN (SELECT seq FROM fed_sent) AND state IN ('queued', 'leased') "
                "AND expires_at < ? RETURNING seq",
                (now - grace,),
            )
        ]
        return self.store.messages_by_seqs(sorted(seqs))

    def purge(self) -> int:
        """Forget what no message row needs any more (history retention removed it)."""
        conn = self.store.conn
        conn.execute(
            "DELETE FROM fed_received WHERE seq != 0 AND seq NOT IN (SELECT seq FROM messages)"
        )
        n = conn.changes()
        conn.execute("DELETE FROM fed_sent WHERE seq NOT IN (SELECT seq FROM messages)")
        return n + conn.changes()
