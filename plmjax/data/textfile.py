"""Reading text files line by line with errors that name the file and the line.

`text_lines(path)` yields the lines of a UTF-8 file (without the newline; a BOM at the start is
dropped). A byte sequence that is not UTF-8 raises ValueError "PATH:LINE: not UTF-8 ...", with
the column and the bytes around it (Python's own error gives a byte offset into a read buffer);
a line longer than `max_line_bytes` raises "PATH:LINE: a line of N bytes ..." (one giant line
usually means a file that is not one sentence / paragraph per line).
"""
from __future__ import annotations

from typing import Iterator, Optional

MAX_LINE_BYTES = 1 << 20


def text_lines(path: str, max_line_bytes: Optional[int] = MAX_LINE_BYTES) -> Iterator[str]:
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if max_line_bytes is not None and len(raw) > max_line_bytes:
        raise ValueError(f"{path}:{lineno}: a line of {len(raw):,} bytes (more than "
                         f"{max_line_bytes:,}): the text should have one sentence or paragraph "
                         "per line")
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        column = len(raw[:e.start].decode("utf-8", errors="replace")) + 1
        raise ValueError(f"{path}:{lineno}: not UTF-8 text: byte 0x{raw[e.start]:02x} at column "
                         f"{column} (near {raw[max(0, e.start - 20):e.start + 20]!r})") from None
      if lineno == 1 and line.startswith("\ufeff"):
        line = line[1:]
      yield line.rstrip("\n").rstrip("\r") if line.endswith("\n") else line
