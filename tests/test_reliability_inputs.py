"""Issue 12, case 6: bad input gets one clear error naming the file and line, or the config key.

- a TSV task file with a non-UTF-8 byte on line 1501 (Python's own error says "position 5481");
- the pretraining text reader, the same byte; a 5 MB line (sentencepiece would end in
  `trainer_interface.cc(467) [!sentences_.empty()]`);
- sentencepiece training on lines all longer than its max_sentence_length;
- model.num_heads=0 (was a ZeroDivisionError) and a width the heads do not divide.
"""
import pytest

from plmjax.data.sources import read_documents
from plmjax.data.tokenizer import train_sentencepiece
from plmjax.finetune.tasks import get_task, read_tsv
from plmjax.train.config import ConfigError, get_config


def _bad_line_1501(path, header=""):
  rows = [f"a fine sentence number {i}\t1\n".encode() for i in range(1499)]
  path.write_bytes(header.encode() + b"".join(rows) + b"caf\xe9 au lait\t0\n" + b"last\t1\n")
  return str(path)


def test_tsv_with_a_non_utf8_row_names_file_and_line(tmp_path):
  path = _bad_line_1501(tmp_path / "train.tsv", header="sentence\tlabel\n")
  with pytest.raises(ValueError, match=r"train.tsv:1501: not UTF-8 text: byte 0xe9 at column 4"):
    read_tsv(get_task("sst2"), path)


def test_text_reader_names_file_and_line(tmp_path):
  path = _bad_line_1501(tmp_path / "corpus.txt")
  with pytest.raises(ValueError, match=r"corpus.txt:1500: not UTF-8 text: byte 0xe9 at column 4"):
    read_documents(path)
  big = tmp_path / "one_line.txt"
  big.write_bytes(b"intro line\n" + b"word " * (1 << 20) + b"\n")
  with pytest.raises(ValueError, match=r"one_line.txt:2: a line of 5,242,881 bytes \(more than "
                     r"1,048,576\): the text should have one sentence or paragraph per line"):
    read_documents(str(big))


def test_sentencepiece_on_only_too_long_lines_names_the_first(tmp_path):
  path = tmp_path / "long.txt"
  path.write_text("\n" + "word " * 2000 + "\n" + "more " * 1000 + "\n")
  with pytest.raises(ValueError, match=r"every line is longer than 4192 bytes .* the first at "
                     r".*long.txt:2 \(10,000 bytes\)"):
    train_sentencepiece([str(path)], str(tmp_path / "sp"), 100)
  with pytest.raises(ValueError, match=r"no text \(empty input\)"):
    train_sentencepiece(["", "  "], str(tmp_path / "sp"), 100)


@pytest.mark.parametrize("override,message", [
    ("--config.model.num_heads=0", "model.num_heads=0 must be >= 1"),
    ("--config.model.hidden_size=30", "model.hidden_size=30 is not divisible by model.num_heads=4"),
    ("--config.train.nonfinite=ignore", "train.nonfinite='ignore': expected one of ('stop', 'skip')"),
    ("--config.train.io_timeout_s=0", "train.io_timeout_s=0.0 must be > 0")])
def test_bad_sizes_are_config_errors_naming_the_key(override, message):
  with pytest.raises(ConfigError) as e:
    get_config("experiments/bert.py:tiny", [override])
  assert str(e.value).startswith(message)
