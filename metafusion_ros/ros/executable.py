"""The ``metafusion_node`` executable: SIGINT / SIGTERM end it with exit code 0 at any moment.

Python's defaults would end a node signalled while it imports numpy and rclpy (about a second)
with a traceback (SIGINT) or killed by the signal (SIGTERM), and rclpy's handlers, installed
for the executor, shut the ROS context down under a configure that is still loading the model,
which then fails, logs to a rosout that is gone and exits 1. So from the first instant until
the executor spins, a signal raises ``KeyboardInterrupt`` in the main thread and is remembered
(:func:`stopping`); :func:`metafusion_ros.ros.node.main` ends quietly with 0 on it, and hands
over to rclpy's handlers (which wake the executor) only when it starts spinning. Once shutdown
has begun, further signals are ignored (``ros2 launch`` signals a process group twice).

This module imports nothing heavy, so the handlers are in place before the node's imports.
"""
from __future__ import annotations

import signal
import sys
from typing import Any

__all__ = ['stop_on_signals', 'ignore_signals', 'stopping', 'forget_interrupt', 'main']

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _stop(signum: int, frame: Any) -> None:
    """Remember the signal, ignore further ones and interrupt the main thread."""
    _received.append(signum)
    ignore_signals()
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt`` once (call from the main thread)."""
    for sig in SIGNALS:
        signal.signal(sig, _stop)


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on (shutdown has begun)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stopping() -> bool:
    """Return whether a SIGINT or SIGTERM has arrived (even where a library swallowed it)."""
    return bool(_received)


def forget_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag once the interrupt has been handled.

    CPython (3.11) sets it when a ``KeyboardInterrupt`` leaves code run by ``exec`` of a
    string (``dataclasses`` and numpy build classes that way while the node imports), even
    where an outer ``except`` handles it, and then ends a clean exit 0 with SIGINT (exit -2).
    Every ``exec`` of a string resets the flag before it runs.
    """
    exec('pass')


def main() -> int:
    """Run the node (:func:`metafusion_ros.ros.node.main`); exit 0 on a signal during imports."""
    stop_on_signals()
    try:
        from metafusion_ros.ros.node import main as run_node
    except KeyboardInterrupt:
        forget_interrupt()
        return 0
    return 0 if stopping() else run_node()


if __name__ == '__main__':
    from metafusion_ros.ros.executable import main as entry  # the module node.py imports
    sys.exit(entry())
