"""TensorBoard scalars, written synchronously: WORKDIR/tensorboard/events.out.tfevents.<time>.<host>.

tensorboardX's SummaryWriter writes from a background thread; when that thread dies on a failed
write (disk full), its queue fills and the next `add_scalar` blocks forever. This writer uses the
same event-file format (tensorboardX's EventsWriter) from the calling thread, so a failed write
raises OSError at the call that made it.
"""
from __future__ import annotations

import os
import time

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2


class EventLog:

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    self._writer = EventsWriter(os.path.join(logdir, "events"))

  def scalars(self, step: int, values: dict, prefix: str = "") -> None:
    """One event with every `values` entry as a scalar `prefix + name`; flushed (not fsynced)."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=prefix + k, simple_value=float(v))
                                         for k, v in values.items()])
    self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    self._writer._py_recordio_writer._writer.flush()    # the OS gets it now: errors surface here

  def close(self) -> None:
    self._writer.close()
