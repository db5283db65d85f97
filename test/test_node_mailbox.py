"""The node's one-slot mailbox: newest frame wins, every superseded frame is counted."""
import threading

from metafusion_ros.runtime.stats import LatestFrame


def test_newest_item_wins_and_older_ones_are_counted():
    """Three puts before a take: the third is taken, two are counted as dropped."""
    box = LatestFrame()
    for item in 'abc':
        box.put(item)
    assert box.take(0.01) == 'c' and box.dropped == 2
    assert box.take(0.01) is None


def test_take_waits_for_a_producer_thread():
    """A consumer waiting in take() is woken by put() from another thread."""
    box = LatestFrame()
    timer = threading.Timer(0.05, box.put, args=('late',))
    timer.start()
    assert box.take(5.0) == 'late'
    timer.join()


def test_close_wakes_the_consumer_and_counts_leftovers():
    """close() ends the wait; a pending item and later puts are dropped and counted."""
    box = LatestFrame()
    box.put('pending')
    box.close()
    assert box.take(5.0) is None and box.dropped == 1
    box.put('after close')
    assert box.dropped == 2 and box.take(0.01) is None
    box.reopen()
    box.put('again')
    assert box.take(0.01) == 'again' and box.dropped == 2
