"""The ordering a lock guarantees to its waiters (issue 3): first come, first served.

A blocked ``acquire()`` registers as a waiter; a release hands the lock to the waiter that
registered first, never to a later one.
"""

from __future__ import annotations

import threading
import time

import unidist
from unidist.backends import Backend

# Waiters that queue up behind the holder; with a lock that lets them race for it instead of
# serving them in order, 4 of them come out in registration order 1 time in 24.
WAITERS = 4
# Time given to a waiter to register after its thread said it is about to call acquire().
# One backend call: milliseconds on an idle machine; the margin is for a loaded CI.
REGISTER_SLACK = 0.3


def test_waiters_get_the_lock_in_the_order_they_started_waiting(backend: Backend) -> None:
    """4 threads block on a held lock one after the other; each release hands the lock to the
    one that has waited longest."""
    holder = unidist.SharedLock("fifo", backend=backend)
    assert holder.acquire(blocking=False)
    order: list[int] = []
    errors: list[BaseException] = []

    def wait(index: int, about_to_wait: threading.Event) -> None:
        lock = unidist.SharedLock("fifo", backend=backend)
        about_to_wait.set()
        try:
            if not lock.acquire(timeout=30):
                return
            order.append(index)
            time.sleep(0.01)
            lock.release()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = []
    for i in range(WAITERS):
        about_to_wait = threading.Event()
        t = threading.Thread(target=wait, args=(i, about_to_wait), daemon=True)
        t.start()
        assert about_to_wait.wait(10)
        time.sleep(REGISTER_SLACK)
        threads.append(t)
    holder.release()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert order == list(range(WAITERS)), f"served in order {order}, not first come first served"
    assert not unidist.SharedLock("fifo", backend=backend).locked()
