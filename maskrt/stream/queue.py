"""The one queue type between pipeline stages: bounded, with an explicit full-queue policy.

``BLOCK``: a full queue makes the producer wait (files, folders, videos, stages: nothing lost).
``DROP_OLDEST``: a full queue evicts its oldest item and hands it to ``on_drop`` with the reason,
so the caller's accounting records it as ``dropped`` (live cameras: fresh frames beat old ones).

Closing ends the stream of items: consumers take what is left, then get :data:`CLOSED`.
Aborting closes and hands back everything queued (the pipeline records those as ``dropped``), and
wakes producers waiting on a full queue, whose ``put`` then returns False. Queues of one group
(the per-source queues one decode stage reads round-robin) may share one condition variable, so
the consumer can wait for any of them.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Policy(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class _Closed:
    def __repr__(self) -> str:
        return "CLOSED"


#: What ``get`` returns once a queue is closed and empty.
CLOSED = _Closed()


class BoundedQueue(Generic[T]):
    """A FIFO of at most ``capacity`` items with a full-queue :class:`Policy`.

    weight: what an item counts against ``capacity`` (default 1; the queue before inference
    counts the faces to classify, so a frame of 40 faces is not "one item"). An item heavier
    than the whole capacity is still taken when the queue is empty.
    supersede: ``supersede(new, queued)`` says whether a new item makes a queued one pointless;
    that one then goes to ``on_drop`` with ``drop_reason`` (a live camera's newer frame makes its
    older one, already aging, pointless: the pipeline is behind, and stale frames only add
    latency).
    """

    def __init__(self, capacity: int, policy: Policy = Policy.BLOCK, *,
                 on_drop: Callable[[T, str], None] | None = None, drop_reason: str = "queue full",
                 cond: threading.Condition | None = None, name: str = "",
                 weight: Callable[[T], int] | None = None,
                 supersede: Callable[[T, T], bool] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"queue {name}: capacity: expected >= 1, got {capacity}")
        if (policy is Policy.DROP_OLDEST or supersede is not None) and on_drop is None:
            raise ValueError(f"queue {name}: dropping needs on_drop to account for what it drops")
        self.capacity = capacity
        self.policy = policy
        self.name = name
        self._on_drop = on_drop
        self._drop_reason = drop_reason
        self._cond = cond or threading.Condition()
        self._items: deque[T] = deque()
        self._weight = weight
        self._supersede = supersede
        self._load = 0  # the items' total weight
        self._closed = False
        self._aborted = False
        self._overflow = False

    def put(self, item: T, *, force: bool = False) -> bool:
        """Queue ``item``; False (item not queued) once the queue was aborted or closed.

        force: queue it even when full (small records that must never wait or be lost).
        """
        with self._cond:
            if self._aborted or (self._closed and not force):
                return False
            weight = self._weight_of(item)
            self._drop_superseded(item)
            if not force and self._full(weight):
                if self.policy is Policy.DROP_OLDEST:
                    assert self._on_drop is not None  # checked in __init__
                    while self._full(weight):
                        self._on_drop(self._pop_locked(), self._drop_reason)
                else:
                    while self._full(weight) and not self._aborted and not self._overflow:
                        self._cond.wait()
                    if self._aborted:
                        return False
            self._items.append(item)
            self._load += weight
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | _Closed | None:
        """The oldest item; :data:`CLOSED` once closed and empty; None after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            return self._pop_locked() if self._items else CLOSED

    def try_get(self) -> T | None:
        """The oldest item, or None without waiting (lock of a shared condition held or not)."""
        with self._cond:
            return self._pop_locked() if self._items else None

    def _drop_superseded(self, item: T) -> None:
        if self._supersede is None:
            return
        for old in [queued for queued in self._items if self._supersede(item, queued)]:
            self._items.remove(old)
            self._load -= self._weight_of(old)
            self._on_drop(old, self._drop_reason)  # type: ignore[misc]  # checked in __init__
        self._cond.notify_all()

    def _weight_of(self, item: T) -> int:
        return 1 if self._weight is None else max(0, int(self._weight(item)))

    def _full(self, weight: int) -> bool:
        """No room for an item of ``weight`` (an empty queue always has room)."""
        return bool(self._items) and self._load + weight > self.capacity

    def _pop_locked(self) -> T:
        item = self._items.popleft()
        self._load -= self._weight_of(item)
        self._cond.notify_all()  # a producer may be waiting for room
        return item

    def close(self) -> None:
        """No more items will be put (except forced ones); consumers drain what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def overflow(self) -> None:
        """From now on ``put`` never waits (a stopping pipeline must not block on a consumer
        that is gone); waiting producers go on."""
        with self._cond:
            self._overflow = True
            self._cond.notify_all()

    def abort(self) -> list[T]:
        """Close, and take every queued item out (the caller accounts for them)."""
        with self._cond:
            self._closed = self._aborted = True
            items = list(self._items)
            self._items.clear()
            self._load = 0
            self._cond.notify_all()
            return items

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def aborted(self) -> bool:
        return self._aborted

    def __len__(self) -> int:
        return len(self._items)
