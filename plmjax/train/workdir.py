"""One run per workdir: WORKDIR/.plmjax.lock.

Process 0 of a run (the only writer of metrics and the coordinator of checkpoints) takes an
exclusive POSIX lock (fcntl.lockf, which NFSv4 also honours) on WORKDIR/.plmjax.lock and writes
"pid host start-time" into it. A second run on the same workdir finds the lock taken and stops
with `WorkdirBusy`, naming the holder. The kernel drops the lock when its process dies (killed,
crashed, host rebooted), so a stale lock file never blocks a resume: the next run simply takes it.
On a file system without locks (ENOLCK) the pid + host in the file decide: a live process of this
host, or any other host's entry younger than a day, counts as busy.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from typing import Optional

LOCK_NAME = ".plmjax.lock"


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _holder(text: str) -> tuple[Optional[int], str, float]:
  parts = text.split()
  try:
    return int(parts[0]), parts[1], float(parts[2])
  except (IndexError, ValueError):
    return None, "", 0.0


class WorkdirLock:
  """`WorkdirLock(workdir).acquire()`; `release()` (also on process exit, by the kernel)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      text = os.pread(fd, 200, 0).decode(errors="replace")
      os.close(fd)
      if e.errno in (errno.EACCES, errno.EAGAIN):
        raise self._busy(text) from None
      if e.errno != errno.ENOLCK:
        raise
      pid, host, since = _holder(text)   # no locking on this file system: trust the pid file
      same_host = host == socket.gethostname()
      if pid and ((same_host and _pid_alive(pid) and pid != os.getpid())
                  or (not same_host and time.time() - since < 86400)):
        raise self._busy(text) from None
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
    self._fd = fd
    return self

  def _busy(self, text: str) -> WorkdirBusy:
    pid, host, since = _holder(text)
    who = (f"pid {pid} on host {host}, running since "
           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}") if pid else "another run"
    return WorkdirBusy(f"workdir {os.path.dirname(self.path)} is in use by {who} (lock "
                       f"{self.path}); wait for that run to end or stop it, or use another --workdir")

  def release(self) -> None:
    if self._fd is not None:
      try:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
      finally:
        os.close(self._fd)
        self._fd = None
