"""Checkpoint integrity: a per-checkpoint digest of its files, and the checks run before resuming.

Orbax / tensorstore write atomically (a checkpoint folder appears only when complete) but do not
checksum what they read back: a truncated, emptied or bit-flipped file either fails deep inside
tensorstore or, worse, loads silently. So every checkpoint gets

    WORKDIR/checkpoints/<step>/plmjax_digest.json
        {"version": 1, "step": S, "algorithm": "sha256",
         "files": {"state/manifest.ocdbt": [size, sha256 hex], ...}, "extra": {...}}

covering every file of its items (state/, data/, config/), written by a background thread as soon
as orbax has renamed the folder into place (orbax may still touch the top-level
_CHECKPOINT_METADATA afterwards, so top-level files are not covered). `extra` holds small run
counters (train.nonfinite="skip": the number of skipped steps).

Cost (sha256 with SHA-NI, ~1.5 GB/s on one core; measured in tests/test_reliability_checkpoints.py's
module docstring): ~1 s per GB of checkpoint, off the training thread at save time and once more
for the checkpoint being resumed. A checkpoint without a digest (a run killed between orbax's
rename and the digest, or saved by an older plmjax) is resumed unverified, with a note.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

DIGEST_FILE = "plmjax_digest.json"
ITEMS = ("state", "data", "config")
_CHUNK = 8 << 20


def _item_files(step_dir: str) -> list[str]:
  """Relative paths of every file under the step's item folders, sorted."""
  out = []
  for item in ITEMS:
    top = os.path.join(step_dir, item)
    for root, _, files in os.walk(top):
      out += [os.path.relpath(os.path.join(root, f), step_dir) for f in files]
  return sorted(out)


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def write_digest(step_dir: str, step: int, extra: Optional[dict] = None) -> None:
  """Hashes the step's item files and writes DIGEST_FILE atomically (tmp file + rename)."""
  files = {rel: [os.path.getsize(os.path.join(step_dir, rel)), file_sha256(os.path.join(step_dir, rel))]
           for rel in _item_files(step_dir)}
  record = {"version": 1, "step": int(step), "algorithm": "sha256", "files": files,
            "extra": extra or {}}
  tmp = os.path.join(step_dir, DIGEST_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, DIGEST_FILE))


def read_extra(step_dir: str) -> dict:
  """The digest's `extra` counters ({} when there is no readable digest)."""
  try:
    with open(os.path.join(step_dir, DIGEST_FILE)) as f:
      return dict(json.load(f).get("extra", {}))
  except (OSError, ValueError):
    return {}


def check_files(step_dir: str) -> tuple[Optional[str], bool]:
  """-> (problem or None, verified). Checks the item folders exist and every file matches the
  digest (size first, then sha256); problem is one line naming the first bad file."""
  for item in ("state", "data"):
    if not os.path.isdir(os.path.join(step_dir, item)):
      return f"no {item}/ folder in {step_dir} (an incomplete or emptied checkpoint)", False
  digest_path = os.path.join(step_dir, DIGEST_FILE)
  if not os.path.exists(digest_path):
    return None, False
  try:
    with open(digest_path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError) as e:
    return f"{digest_path} is unreadable ({type(e).__name__}: {e})", False
  for rel, (size, sha) in sorted(files.items()):
    path = os.path.join(step_dir, rel)
    if not os.path.isfile(path):
      return f"{path} is missing", False
    got = os.path.getsize(path)
    if got != size:
      return f"{path} has {got} bytes, {size} when saved (truncated or rewritten)", False
  for rel, (size, sha) in sorted(files.items()):
    path = os.path.join(step_dir, rel)
    if file_sha256(path) != sha:
      return f"{path} does not match its sha256 digest (the bytes changed after the save)", False
  return None, True


@jax.jit
def _finite_leaves(tree):
  return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]


def nonfinite_leaves(tree, limit: int = 3) -> list[str]:
  """Names of (floating) leaves holding NaN / inf, at most `limit`."""
  leaves = [(jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
            if jnp.issubdtype(v.dtype, jnp.inexact)]
  if not leaves:
    return []
  flags = jax.device_get(_finite_leaves([v for _, v in leaves]))
  return [name for (name, _), ok in zip(leaves, flags) if not bool(np.asarray(ok))][:limit]


OS_CAUSES = tuple(os.strerror(e) for e in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                             errno.EPERM, errno.EFBIG, errno.EIO))


def summarize(e: BaseException, limit: int = 240) -> str:
  """One line for an exception raised deep inside orbax / tensorstore, led by the OS-level cause
  ("No space left on device", "Permission denied", ...) when one is in its text or its chain."""
  text = " ".join(str(e).split())
  cause = ""
  seen, x = set(), e
  while x is not None and id(x) not in seen:
    seen.add(id(x))
    if isinstance(x, OSError) and x.strerror:
      cause = x.strerror
      break
    x = x.__cause__ or x.__context__
  cause = cause or next((c for c in OS_CAUSES if c in text), "")
  short = f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
  return f"{cause} ({short})" if cause else short
