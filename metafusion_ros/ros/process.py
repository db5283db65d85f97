"""Start ``metafusion_node`` as a separate process (demo, benchmark) and stop it cleanly."""
from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Any

__all__ = ['package_file', 'node_command', 'start_node', 'stop_node', 'peak_rss_kib',
           'rss_kib']


def package_file(*parts: str) -> Path:
    """Return a file of the package: the source tree's first, else the installed share's."""
    local = Path.cwd().joinpath(*parts)
    if local.exists():
        return local
    source = Path(__file__).resolve().parents[2].joinpath(*parts)
    if source.exists():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('metafusion_ros')).joinpath(*parts)
    except (ImportError, LookupError, ValueError):
        return local


def node_command(params: dict[str, Any], name: str = 'metafusion_node',
                 remap: dict[str, str] | None = None) -> list[str]:
    """Return the command line of a node with the package config and ``params`` overrides."""
    command = [sys.executable, '-m', 'metafusion_ros.ros.executable', '--ros-args',
               '--params-file', str(package_file('config', 'fusion.yaml')),
               '-r', f'__node:={name}']
    for key, value in params.items():
        command += ['-p', f"{key}:={value if value != '' else repr('')}"]
    for src, dst in (remap or {}).items():
        command += ['-r', f'{src}:={dst}']
    return command


def start_node(params: dict[str, Any], env: dict[str, str] | None = None,
               name: str = 'metafusion_node', remap: dict[str, str] | None = None,
               log: Path | None = None) -> subprocess.Popen:
    """Start the node; its output goes to ``log`` (or is inherited)."""
    out = open(log, 'w') if log is not None else None
    try:
        return subprocess.Popen(node_command(params, name, remap), env=env or dict(os.environ),
                                stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out is not None:
            out.close()


def stop_node(proc: subprocess.Popen, timeout: float = 30.0,
              sig: int = signal.SIGINT) -> int:
    """Send ``sig`` and return the exit code (kill after ``timeout``)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _status_kib(pid: int, key: str) -> int:
    """Return a ``/proc/<pid>/status`` memory field in KiB (0 where unavailable)."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith(key + ':'):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Return the resident set size of ``pid`` in KiB."""
    return _status_kib(pid, 'VmRSS')


def peak_rss_kib(pid: int) -> int:
    """Return the peak resident set size of ``pid`` in KiB."""
    return _status_kib(pid, 'VmHWM')
