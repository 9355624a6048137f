"""The loop's timer heap (gateway/sipstack.py)."""

from gateway.sipstack import TimerHeap


def test_due_timers_come_out_in_order_and_cancelled_ones_never():
    heap = TimerHeap()
    fired = []
    for when in (3.0, 1.0, 2.0):
        heap.push(when, lambda w=when: fired.append(w))
    heap.push(1.5, lambda: fired.append("cancelled")).cancel()
    for timer in heap.pop_due(2.5):
        timer.callback()
    assert fired == [1.0, 2.0]
    assert [t.when for t in heap.pop_due(10.0)] == [3.0]
    assert len(heap) == 0


def test_cancelled_far_timers_do_not_pile_up():
    """Every finished call cancels a cut timer due hours later: the heap stays
    the size of the live timers, not of every call ever made."""
    heap = TimerHeap()
    live = [heap.push(10.0 + i, lambda: None) for i in range(10)]
    for i in range(50_000):
        heap.push(14_400.0 + i, lambda: None).cancel()
    assert len(heap) < 2 * TimerHeap.COMPACT_EVERY + len(live)
    assert [t.when for t in heap.pop_due(100.0)] == [t.when for t in live]


def test_cancel_releases_the_callback_at_once():
    heap = TimerHeap()
    timer = heap.push(5.0, lambda: None)
    timer.cancel()
    assert timer.callback is None and timer.cancelled
