"""Checked Hugging Face import: corrupted tensor bytes (NaN / inf), truncated files and sharded
indexes that name absent shards or tensors each give one error naming the file and what is wrong."""
import json
import os
import struct

import pytest

from tests.hf_reference import bert_config, randomize, save, transformers
from plmjax.convert import CheckpointError, from_hf


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("bert")
  save(randomize(transformers.BertModel(bert_config())), path)
  return path


def _copy(src, dst):
  os.makedirs(dst, exist_ok=True)
  for f in os.listdir(src):
    with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
      b.write(a.read())
  return dst


def _poke(file, tensor, index, value):
  """Overwrites float32 element `index` of `tensor` in the safetensors file's data bytes."""
  with open(file, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    assert header[tensor]["dtype"] == "F32"
    f.seek(8 + n + header[tensor]["data_offsets"][0] + 4 * index)
    f.write(struct.pack("<f", value))


def test_non_finite_tensors_are_named_and_counted(bert_dir, tmp_path):
  path = _copy(bert_dir, tmp_path / "bad")
  file = os.path.join(path, "model.safetensors")
  for i in (0, 5, 7):
    _poke(file, "encoder.layer.1.output.dense.weight", i, float("nan"))
  _poke(file, "pooler.dense.bias", 3, float("inf"))
  _poke(file, "pooler.dense.bias", 4, float("-inf"))
  with pytest.raises(CheckpointError) as e:
    from_hf(str(path))
  msg = str(e.value)
  assert file in msg and "2 tensor(s)" in msg, msg
  assert "encoder.layer.1.output.dense.weight (3 of 2048 values)" in msg, msg
  assert "pooler.dense.bias (2 of 32 values)" in msg, msg


def test_truncated_file_is_named(bert_dir, tmp_path):
  path = _copy(bert_dir, tmp_path / "cut")
  file = os.path.join(path, "model.safetensors")
  size = os.path.getsize(file)
  with open(file, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file.*truncated"):
    from_hf(str(path))
  with open(file, "r+b") as f:        # cut inside the header too
    f.truncate(20)
  with pytest.raises(CheckpointError, match=str(file)):
    from_hf(str(path))


def _shard(bert_dir, tmp_path):
  """The checkpoint as two shards + index."""
  from safetensors.numpy import load_file, save_file
  path = tmp_path / "sharded"
  os.makedirs(path)
  state = load_file(os.path.join(bert_dir, "model.safetensors"))
  keys = sorted(state)
  half = len(keys) // 2
  names = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
  for name, ks in names.items():
    save_file({k: state[k] for k in ks}, os.path.join(path, name))
  index = {"metadata": {}, "weight_map": {k: n for n, ks in names.items() for k in ks}}
  (path / "model.safetensors.index.json").write_text(json.dumps(index))
  (path / "config.json").write_text((bert_dir / "config.json").read_text())
  return path, index


def test_sharded_checkpoint_loads_and_names_missing_shards(bert_dir, tmp_path):
  path, index = _shard(bert_dir, tmp_path)
  model, params = from_hf(str(path))                  # complete: loads
  assert "pooler" in params
  os.remove(path / "model-00002-of-00002.safetensors")
  with pytest.raises(CheckpointError, match=r"1 of 2 shard files .* missing .*model-00002-of-00002"):
    from_hf(str(path))


def test_sharded_index_naming_a_tensor_the_shard_lacks(bert_dir, tmp_path):
  path, index = _shard(bert_dir, tmp_path)
  index["weight_map"]["encoder.layer.9.output.dense.weight"] = "model-00001-of-00002.safetensors"
  (path / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(CheckpointError, match=r"encoder\.layer\.9\.output\.dense\.weight \(in model-00001"):
    from_hf(str(path))
  (path / "model.safetensors.index.json").write_text("{\n  \"weight_map\": [oops\n}")
  with pytest.raises(CheckpointError, match="index.json: line 2: invalid JSON"):
    from_hf(str(path))


def test_corrupted_pytorch_bin_is_checked_too(tmp_path):
  import torch
  ref = randomize(transformers.BertModel(bert_config()))
  with torch.no_grad():
    ref.pooler.dense.weight[0, :4] = float("nan")
  path = save(ref, tmp_path, safe=False)
  with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: 1 tensor\(s\).*pooler\.dense\.weight \(4 of 1024"):
    from_hf(path)
