"""Data: the synthetic corpus, tokenizers, document sources (TFDS array_record) and the grain pipeline.

    from plmjax.data import build_dataset, default_data_config
    ds = build_dataset(default_data_config(), split="train", global_batch_size=8, seq_len=64, seed=0)
"""
from plmjax.data.pipeline import TextDataset, build_dataset, default_data_config
from plmjax.data.synthetic import entropy_floor_nats
from plmjax.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece, train_tokenizer_cli

__all__ = ["TextDataset", "Tokenizer", "build_dataset", "default_data_config", "entropy_floor_nats",
           "load_tokenizer", "train_sentencepiece", "train_tokenizer_cli"]
