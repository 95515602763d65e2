"""What an input port received: batches, the messages handed to handlers, and the per-producer
window that recognises copies."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Union

from fabric.ports.links import Link


class ReceivedBatch:
    """A batch this port received: how much of it is handled, and where to acknowledge it."""

    __slots__ = ("producer_id", "first_seq", "count", "handled", "done", "via", "charged",
                 "charged_epoch", "redelivered", "ack", "through", "size")

    def __init__(self, producer_id: bytes, first_seq: int, count: int, skip: int,
                 via: Link, redelivered: bool,
                 ack: Callable[["ReceivedBatch", int, int], None], size: int = 0) -> None:
        self.producer_id = producer_id
        self.first_seq = first_seq
        self.count = count
        self.handled = skip  # messages [0, handled) are handled
        self.done: set[int] | None = None  # out-of-order manual acks beyond ``handled``
        self.via: Link | None = via
        self.charged = via  # the intermediary whose credit this batch used
        self.charged_epoch = via.epoch
        self.redelivered = redelivered
        self.ack = ack  # the port's manual acknowledgement of messages [start, end)
        self.through = via.endpoint  # the intermediary of the last copy received (kept on loss)
        self.size = size  # bytes of its payloads, encoded


class Message:
    """One delivered message.

    ``payload`` is what the producer sent; ``producer_id`` and ``seq`` identify the message
    uniquely; ``redelivered`` is True when a consumer that received it before may have died while
    handling it (it may have been handled already).
    """

    __slots__ = ("payload", "_state", "_index")

    def __init__(self, payload: Any, state: ReceivedBatch, index: int) -> None:
        self.payload = payload
        self._state = state
        self._index = index

    @property
    def producer_id(self) -> bytes:
        """The 16-byte id of the producer that sent this message."""
        return self._state.producer_id

    @property
    def seq(self) -> int:
        """This message's sequence number among its producer's messages (from 0)."""
        return self._state.first_seq + self._index

    @property
    def redelivered(self) -> bool:
        """True if another consumer may already have handled this message."""
        return self._state.redelivered

    @property
    def intermediary(self) -> str:
        """The endpoint of the intermediary this message came through."""
        return self._state.charged.endpoint

    def ack(self) -> None:
        """Acknowledge this message (with ``auto_ack=False``; harmless otherwise)."""
        self._state.ack(self._state, self._index, self._index + 1)

    def __repr__(self) -> str:
        return (f"Message(seq={self.seq}, producer={self.producer_id.hex()[:8]}, "
                f"redelivered={self.redelivered}, payload={self.payload!r:.40})")


Handler = Callable[[Message], Union[Awaitable[None], None]]


class DeliveredBatch:
    """The messages of one received batch, handed over at once to a batch handler
    (``InputPort(batch_handler=...)``): ``payloads`` are messages ``first_seq``, ``first_seq``
    + 1, ... of ``producer_id``; ``ack()`` acknowledges them all."""

    __slots__ = ("payloads", "first_seq", "_state", "_start")

    def __init__(self, state: ReceivedBatch, start: int, payloads: list[Any]) -> None:
        self.payloads = payloads
        self.first_seq = state.first_seq + start
        self._state = state
        self._start = start

    @property
    def producer_id(self) -> bytes:
        """The 16-byte id of the producer that sent these messages."""
        return self._state.producer_id

    @property
    def redelivered(self) -> bool:
        """True if another consumer may already have handled these messages."""
        return self._state.redelivered

    @property
    def size(self) -> int:
        """About how many bytes these payloads took encoded (their share of the batch's)."""
        state = self._state
        return state.size * len(self.payloads) // max(1, state.count)

    def ack(self) -> None:
        """Acknowledge every message of this batch."""
        self._state.ack(self._state, self._start, self._start + len(self.payloads))


BatchHandler = Callable[[DeliveredBatch], None]


class ProducerWindow:
    """Batches received from one producer, remembered to recognise copies (bounded)."""

    __slots__ = ("batches", "acked_below")

    def __init__(self) -> None:
        self.batches: OrderedDict[int, ReceivedBatch] = OrderedDict()
        self.acked_below = 0

    def prune(self, acked_below: int) -> None:
        """Forget batches the producer has fully acknowledged (they cannot come again)."""
        if acked_below <= self.acked_below:
            return
        self.acked_below = acked_below
        batches = self.batches
        while batches:
            seq, state = next(iter(batches.items()))
            if seq + state.count > acked_below:
                return
            batches.popitem(last=False)
