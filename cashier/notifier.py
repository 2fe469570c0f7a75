"""Hospital notifications through a transactional outbox (SPEC §6, API.md "Notification").

``enqueue`` writes the notification row in the same transaction as the state change it
reports (a payment's is written by the settling statement itself, through
``new_notification`` and ``PreparedQuery.execute_then_insert``), so a change is never
without its notification and never notified twice.
A worker's ``Deliveries`` claim due rows with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers on several hosts share the queue) as delivery slots free up,
POST each, signed by the platform with the receiving institution's secret, and record every
attempt. Rows are taken in turns across institutions and no institution holds more than its
share of a worker's slots, so a hospital that is down or slow delays only its own
notifications: the others' are claimed and sent while its attempts wait for an answer. A
worker killed mid-delivery leaves its lease behind; the row is claimed again when the lease
runs out, so nothing is lost (the institution may see a notification twice: it carries
``notification_id`` to tell).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
from tortoise.expressions import Q

from cardcore import access, db, outbound, signing
from cardcore.clock import iso, utcnow
from cardcore.runtime import Runtime
from cardcore.paging import newest_first
from cashier.errors import NotificationNotFound
from cashier.models import Notification, NotificationAttempt, NotificationStatus, Order, Refund

log = logging.getLogger("ehc.cashier.notifier")

# Delay before each retry, as the channels schedule theirs (SPEC §6): 15 retries after the first try.
RETRY_SCHEDULE_S = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
CONCURRENT_DELIVERIES = 48
# Slots no single institution may take, kept for the others' notifications that come due.
RESERVED_FOR_OTHERS = CONCURRENT_DELIVERIES // 3
# A worker with every slot busy claims again once this many are free (or a poll has passed),
# and claims at most this often: under load one claim takes several deliveries' rows (a
# claim is five statements, so a notification's share of them falls as claims grow).
REFILL_AT = CONCURRENT_DELIVERIES // 4
CLAIM_INTERVAL_S = 0.1
# How long the first attempt to finish waits for others before the attempts are written:
# the deliveries of one claim finish within a few milliseconds of each other.
WRITE_GATHER_S = 0.02
# Due rows looked at per row claimed, so that rows of several institutions can share a claim.
CANDIDATES_PER_ROW = 4
ACCEPTED_ANSWER = "SUCCESS"
# How much of an institution's answer is read: enough for "SUCCESS" or the start of a refusal.
ANSWER_READ_LIMIT = 4096

# Set when this process committed a notification, so its worker delivers without waiting for the next poll.
_pending = asyncio.Event()


def notification_body(order: Order, event: str, refund: Refund | None = None) -> dict:
    body = {
        "event": event,
        "order_no": order.order_no,
        "out_trade_no": order.out_trade_no,
        "amount_fen": order.amount_fen,
        "status": order.status.value,
        "channel": order.channel,
        "channel_trade_no": order.channel_trade_no,
        "paid_fen": order.paid_fen,
        "insurance_fen": order.insurance_fen,
        "self_pay_fen": order.paid_fen - order.insurance_fen,
        "paid_at": iso(order.paid_at),
        "closed_at": iso(order.closed_at),
    }
    if refund is not None:
        body.update(
            refund_no=refund.refund_no,
            out_refund_no=refund.out_refund_no,
            refund_fen=refund.amount_fen,
            refund_status=refund.status.value,
            refunded_at=iso(refund.finished_at),
        )
    return body


def new_notification(order: Order, event: str, refund: Refund | None = None) -> Notification | None:
    """The notification of ``event``, not yet saved (none for orders without notify_url)."""
    if not order.notify_url:
        return None
    return Notification(
        institution_id=order.institution_id,
        order_no=order.order_no,
        out_trade_no=order.out_trade_no,
        event=event,
        url=order.notify_url,
        body=json.dumps(notification_body(order, event, refund), ensure_ascii=False, separators=(",", ":")),
        next_attempt_at=utcnow(),
    )


async def enqueue(conn, order: Order, event: str, refund: Refund | None = None) -> Notification | None:
    """Add a notification inside the caller's transaction ``conn`` (none for orders without notify_url)."""
    notification = new_notification(order, event, refund)
    if notification is not None:
        await notification.save(using_db=conn, force_create=True)
    return notification


_ID_FIELD = '{"notification_id":'


def sent_body(notification: Notification) -> str:
    """The JSON the institution receives: the stored event with the notification's id first,
    so that it can recognise a repeated delivery. The id exists only once the row does, so it
    is added here rather than stored (rows written before carry it already)."""
    if notification.body.startswith(_ID_FIELD):
        return notification.body
    return f'{_ID_FIELD}"{notification.id}",{notification.body[1:]}'


def wake() -> None:
    """Tell this process's worker that a notification was committed."""
    _pending.set()


def _share(slots: int, institutions: int) -> int:
    """Most slots one of ``institutions`` may hold at once: an equal part, and never so many
    that there is no room left for an institution whose notifications come due later."""
    return min(-(-slots // max(1, institutions)), slots - RESERVED_FOR_OTHERS)


async def _claim(owner: str, lease_s: int, limit: int, slots: int, busy: dict[str, str]) -> list[Notification]:
    """Lease up to ``limit`` due rows for delivery now. ``busy`` maps the orders with a delivery
    under way in this worker to their institutions: an order's next row waits for it (one
    order's notifications go out in the order they happened), and each institution's
    deliveries under way count against its share of the ``slots``."""
    moment = utcnow()
    in_flight = Counter(busy.values())
    # Institutions at their largest possible share (one more institution may be waiting) are
    # left out of the candidates, so that their backlog cannot fill the window of due rows.
    widest = _share(slots, len(in_flight) + 1)
    full = [institution_id for institution_id, count in in_flight.items() if count >= widest]
    async with db.background_transaction() as conn:
        due = Notification.filter(status=NotificationStatus.pending, next_attempt_at__lte=moment).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=moment)
        )
        if busy:
            due = due.exclude(order_no__in=list(busy))
        if full:
            due = due.exclude(institution_id__in=full)
        candidates = await (
            due.order_by("next_attempt_at", "id")
            .limit(CANDIDATES_PER_ROW * limit)
            .select_for_update(skip_locked=True)
            .only("id", "institution_id")  # whole rows only for those taken
            .using_db(conn)
        )
        ids = [row.id for row in _in_turns(candidates, limit, slots, in_flight)]
        if not ids:
            return []
        await Notification.filter(id__in=ids).using_db(conn).update(
            lease_owner=owner, lease_until=moment + timedelta(seconds=lease_s)
        )
        # The candidates not taken are unlocked at commit, still due.
        return await Notification.filter(id__in=ids).using_db(conn)


def _in_turns(candidates: list[Notification], limit: int, slots: int, in_flight: Counter) -> list[Notification]:
    """Up to ``limit`` rows taken in turns from each institution's oldest, none beyond an
    institution's share of the slots (counting its deliveries under way), so that one
    institution's backlog (a hospital that is down, say) cannot fill the worker while the
    others' notifications wait behind it."""
    queues: dict[str, deque[Notification]] = {}
    for row in candidates:
        queues.setdefault(row.institution_id, deque()).append(row)
    share = _share(slots, len(in_flight.keys() | queues.keys()))
    room = {institution_id: share - in_flight[institution_id] for institution_id in queues}
    taken: list[Notification] = []
    while queues and len(taken) < limit:
        for institution_id in list(queues):
            queue = queues[institution_id]
            taken.append(queue.popleft())
            room[institution_id] -= 1
            if not queue or room[institution_id] <= 0:
                del queues[institution_id]
            if len(taken) == limit:
                break
    return taken


async def _secret_of(rt: Runtime, institution_id: str) -> str | None:
    client = await access.client_for_auth(rt, institution_id)
    return client.secret if client is not None else None


def delivery_session(timeout_s: float) -> aiohttp.ClientSession:
    """The HTTP session a worker delivers through: a connection kept per concurrent delivery."""
    return outbound.new_session(timeout_s, connections=CONCURRENT_DELIVERIES)


def _path_with_query(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _post(http: aiohttp.ClientSession, notification: Notification, secret: str | None) -> tuple[int | None, str, str]:
    """(HTTP status, outcome, detail) of one delivery attempt, signed with the receiving
    institution's ``secret`` (None: the institution is unknown)."""
    if secret is None:
        return None, "error", "institution unknown"
    body = sent_body(notification).encode()
    headers = signing.signed_headers(
        signing.PLATFORM_CLIENT_ID, secret, "POST", _path_with_query(notification.url), body
    )
    headers["Content-Type"] = "application/json; charset=utf-8"
    try:
        reply = await outbound.fetch(http, "POST", notification.url, data=body, headers=headers, read_limit=ANSWER_READ_LIMIT)
    except outbound.FAILURES as exc:
        return None, "error", f"{type(exc).__name__}: {exc}"[:255]
    answer = reply.text.strip()
    if reply.status_code == 200 and answer == ACCEPTED_ANSWER:
        return reply.status_code, "delivered", ""
    return reply.status_code, "refused", answer[:255]


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's outcome, to be written to the attempt log and its notification."""

    notification_id: int
    number: int
    http_status: int | None
    outcome: str  # delivered | refused | error
    detail: str
    duration_ms: int

    def changes(self, moment: datetime) -> dict:
        """What the attempt changes on its notification, recorded at ``moment``."""
        changes: dict = {"attempts": self.number, "lease_owner": None, "lease_until": None, "last_error": self.detail}
        if self.outcome == "delivered":
            changes.update(status=NotificationStatus.delivered, delivered_at=moment)
        elif self.number > len(RETRY_SCHEDULE_S):
            changes.update(status=NotificationStatus.failed)
        else:
            changes.update(next_attempt_at=moment + timedelta(seconds=RETRY_SCHEDULE_S[self.number - 1]))
        return changes


async def _write_attempts(owner: str, attempts: list[Attempt]) -> None:
    """Write attempts in one transaction: one insert for the attempt log, one update for each
    distinct result (all first deliveries that succeeded share one)."""
    moment = utcnow()
    results: dict[tuple, list[int]] = {}
    for attempt in attempts:
        results.setdefault(tuple(attempt.changes(moment).items()), []).append(attempt.notification_id)
    async with db.background_transaction() as conn:
        await NotificationAttempt.bulk_create(
            [
                NotificationAttempt(
                    notification_id=a.notification_id, number=a.number, http_status=a.http_status,
                    outcome=a.outcome, detail=a.detail, duration_ms=a.duration_ms,
                )
                for a in attempts
            ],
            using_db=conn,
        )  # fmt: skip
        for changes, ids in results.items():
            # Only the lease holder records the result; a worker whose lease ran out lost the row.
            await Notification.filter(id__in=ids, lease_owner=owner).using_db(conn).update(**dict(changes))


class AttemptLog:
    """Writes a worker's delivery attempts, those that finish together in one transaction.

    A delivery waits until its attempt is written, so its slot stays taken until then and
    ``Deliveries.drain`` still means "recorded". The first attempt to finish waits
    ``WRITE_GATHER_S`` for the others finishing with it; those that finish while a write is
    under way go together in the next one. Under load that is four statements for a claim's
    deliveries instead of four for each.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._waiting: list[tuple[Attempt, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def record(self, attempt: Attempt) -> None:
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._waiting.append((attempt, written))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_while_waiting())
        await written

    async def _write_while_waiting(self) -> None:
        await asyncio.sleep(WRITE_GATHER_S)
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await _write_attempts(self._owner, [attempt for attempt, _ in batch])
            except Exception as exc:  # each waiting delivery reports it; the leases bring the rows back
                for _, written in batch:
                    if not written.done():
                        written.set_exception(exc)
            else:
                for _, written in batch:
                    if not written.done():
                        written.set_result(None)

    def cancel(self) -> None:
        if self._writer is not None:
            self._writer.cancel()


async def _deliver_one(
    http: aiohttp.ClientSession, notification: Notification, secret: str | None, attempts: AttemptLog
) -> bool:
    started = time.monotonic()
    number = notification.attempts + 1
    status, outcome, detail = await _post(http, notification, secret)
    duration_ms = int((time.monotonic() - started) * 1000)
    await attempts.record(Attempt(notification.id, number, status, outcome, detail, duration_ms))
    if outcome != "delivered":
        log.warning(
            "notification not accepted",
            extra={"notification_id": notification.id, "order_no": notification.order_no, "attempt": number,
                   "outcome": outcome, "detail": detail},
        )
    return outcome == "delivered"


class Deliveries:
    """One worker's notifications under way: claimed as its delivery slots free up.

    A slot is one order's due notifications, sent one after another. ``fill`` claims rows
    for the free slots and starts them; the worker never waits for the slowest delivery
    before claiming more, so a hospital that answers slowly (or not at all, until the
    timeout) holds only the slots of its own deliveries.
    """

    def __init__(
        self, rt: Runtime, http: aiohttp.ClientSession, owner: str | None = None, slots: int = CONCURRENT_DELIVERIES
    ) -> None:
        self._rt, self._http, self._slots = rt, http, slots
        self.owner = owner or secrets.token_hex(8)
        self._attempts = AttemptLog(self.owner)
        self._running: dict[asyncio.Task, tuple[str, str]] = {}  # task -> (order_no, institution_id)

    @property
    def free(self) -> int:
        return self._slots - len(self._running)

    async def fill(self) -> int:
        """Claim due rows for the free slots and start delivering them; how many were claimed."""
        if self.free <= 0:
            return 0
        busy = dict(self._running.values())
        rows = await _claim(self.owner, self._rt.settings.notify_lease_s, self.free, self._slots, busy)
        by_order: dict[str, list[Notification]] = {}
        for row in rows:
            by_order.setdefault(row.order_no, []).append(row)
        # A claim's rows are mostly one institution's: its secret is read once for them all.
        loop = asyncio.get_running_loop()
        secret_reads: dict[str, asyncio.Task] = {}
        for order_no, batch in by_order.items():
            institution_id = batch[0].institution_id
            if institution_id not in secret_reads:
                secret_reads[institution_id] = loop.create_task(_secret_of(self._rt, institution_id))
            task = loop.create_task(self._in_sequence(batch, secret_reads[institution_id]))
            self._running[task] = (order_no, institution_id)
            task.add_done_callback(self._running.pop)
        return len(rows)

    async def _in_sequence(self, batch: list[Notification], secret_read: asyncio.Task) -> None:
        for row in sorted(batch, key=lambda r: r.id):
            try:
                # Shielded: the read is shared, and one delivery cancelled must not cancel it for the others.
                secret = await asyncio.shield(secret_read)
                await _deliver_one(self._http, row, secret, self._attempts)
            except Exception:  # one bad row must not stop the others; its lease brings it back
                log.exception("notification delivery failed", extra={"notification_id": row.id})

    async def some_finished(self, timeout_s: float, at_least: int = 1) -> None:
        """Wait until ``at_least`` slots are free (or none is busy), or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while self._running and self.free < at_least:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.wait(list(self._running), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def more_due(self, timeout_s: float) -> None:
        """Wait until this process commits a notification (``wake``), a delivery under way
        finishes (its institution's share has room again), or ``timeout_s`` passed (rows
        written by other processes, retries coming due)."""
        woken = asyncio.ensure_future(_pending.wait())
        try:
            await asyncio.wait([woken, *self._running], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        _pending.clear()

    async def drain(self) -> None:
        """Wait for every delivery under way to finish and be recorded."""
        if self._running:
            await asyncio.wait(list(self._running))

    def cancel(self) -> None:
        """Stop the deliveries under way; their leases bring the rows back."""
        for task in list(self._running):
            task.cancel()
        self._attempts.cancel()


async def deliver_continuously(
    rt: Runtime, http: aiohttp.ClientSession, owner: str, stopping: asyncio.Event, poll_s: float
) -> None:
    """A worker's delivery loop: claims as slots free up and as notifications come due, until
    ``stopping`` is set; then lets the deliveries under way finish and be recorded."""
    deliveries = Deliveries(rt, http, owner)
    next_claim = 0.0
    try:
        while not stopping.is_set():
            if (pause := next_claim - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            next_claim = time.monotonic() + CLAIM_INTERVAL_S
            wanted = deliveries.free
            try:
                claimed = await deliveries.fill()
            except Exception:  # the database may be away for a moment; try again next poll
                log.exception("notifications could not be claimed")
                claimed = 0
            if deliveries.free == 0:
                await deliveries.some_finished(poll_s, at_least=REFILL_AT)
            elif claimed < wanted:  # nothing more is due now for this worker
                await deliveries.more_due(poll_s)
        await deliveries.drain()
    finally:
        deliveries.cancel()  # only when cancelled itself: the rows come back with their leases


async def deliver_due(rt: Runtime, http: aiohttp.ClientSession, owner: str | None = None) -> int:
    """Deliver the notifications that are due now (up to one worker's slots) and wait for the
    attempts to be recorded; returns how many were attempted."""
    deliveries = Deliveries(rt, http, owner)
    try:
        claimed = await deliveries.fill()
        await deliveries.drain()
    finally:
        deliveries.cancel()
    return claimed


async def get_notification(notification_id: int) -> Notification:
    notification = await Notification.get_or_none(id=notification_id)
    if notification is None:
        raise NotificationNotFound()
    return notification


async def resend(notification_id: int) -> Notification:
    """Admin resend: deliver again now, on a fresh retry schedule (the attempt log restarts at 1)."""
    await get_notification(notification_id)
    await Notification.filter(id=notification_id).update(
        status=NotificationStatus.pending, attempts=0, next_attempt_at=utcnow(), lease_owner=None, lease_until=None
    )
    wake()
    return await Notification.get(id=notification_id)


async def list_notifications(
    *, limit: int, cursor: str | None = None, status: str | None = None, institution_id: str | None = None,
    order_no: str | None = None,
) -> tuple[list[Notification], str | None]:
    """Newest first; the cursor is the id of the last row of the previous page."""
    query = Notification.all()
    if status:
        query = query.filter(status=status)
    if institution_id:
        query = query.filter(institution_id=institution_id)
    if order_no:
        query = query.filter(order_no=order_no)
    return await newest_first(query, limit=limit, cursor=cursor)


async def attempts_of(notification_id: int) -> list[NotificationAttempt]:
    return await NotificationAttempt.filter(notification_id=notification_id).order_by("number", "id")


def notification_view(notification: Notification, attempts: list[NotificationAttempt] | None = None) -> dict:
    view = {
        "id": str(notification.id),
        "institution_id": notification.institution_id,
        "order_no": notification.order_no,
        "out_trade_no": notification.out_trade_no,
        "event": notification.event,
        "url": notification.url,
        "status": notification.status.value,
        "attempts": notification.attempts,
        "next_attempt_at": iso(notification.next_attempt_at),
        # Set while a worker is delivering it; a dead worker's lease simply runs out.
        "in_delivery_until": iso(notification.lease_until),
        "last_error": notification.last_error,
        "created_at": iso(notification.created_at),
        "delivered_at": iso(notification.delivered_at),
        "body": json.loads(sent_body(notification)),
    }
    if attempts is not None:
        view["attempt_log"] = [
            {
                "number": a.number,
                "http_status": a.http_status,
                "outcome": a.outcome,
                "detail": a.detail,
                "duration_ms": a.duration_ms,
                "at": iso(a.at),
            }
            for a in attempts
        ]
    return view
