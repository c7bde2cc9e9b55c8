"""Everything a run needs before its first step: the training pairs, the held-out pairs, the
model to train and the tokenised examples (from the cache when one is configured). Shared by
both engines, so they train the same function on the same data."""

from __future__ import annotations

import logging

import numpy as np
import torch

from sbert_nli.config import RunConfig

log = logging.getLogger("sbert_nli")


def build_encoder(config: RunConfig, data=None):
    """The model to train: a loaded one, or the built-in tiny BERT whose vocab comes from ``data``."""
    from sbert_nli.model import TINY_BERT, SentenceEncoder, build_tiny_bert

    m = config.model
    if m.name == TINY_BERT:
        encoder = build_tiny_bert(data.premise + data.hypothesis, m.tiny_hidden_size, m.tiny_layers, m.tiny_heads,
                                  m.tiny_vocab_size, m.max_seq_length, seed=config.train.seed)
        if m.pooling:
            encoder.pooling = m.pooling
    else:
        encoder = SentenceEncoder.load(m.name, m.pooling, m.max_seq_length, m.trust_remote_code)
    if m.dropout is not None:
        for module in encoder.transformer.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = m.dropout
    pooler = getattr(encoder.transformer, "pooler", None)
    if pooler is not None:  # BERT's pooler is not part of a sentence embedding: freeze it (DDP needs every grad)
        pooler.requires_grad_(False)
    return encoder


def load_training_data(config: RunConfig, pairs=None):
    """(train pairs, held-out pairs or None) exactly as both engines use them. ``pairs`` (``NLIData``,
    from memory via the Python API) replaces reading ``data.train``; the rest applies the same way."""
    from sbert_nli.data.nli import load_nli, read_nli_file, split_holdout

    d, seed = config.data, config.train.seed
    data = pairs if pairs is not None else load_nli(d.train, d.columns, d.synthetic_pairs, seed=seed,
                                                    quoting=d.quoting)
    if d.max_train_pairs and d.max_train_pairs < len(data):
        data = data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[: d.max_train_pairs]))
    data, heldout = split_holdout(data, d.holdout_fraction, seed)
    if d.eval_nli:
        heldout = read_nli_file(d.eval_nli, d.columns, d.quoting)
    return data, heldout


def prepare_data_and_model(config: RunConfig, log_progress: bool = True, pairs=None):
    """(encoder, tokenised examples, train data, held-out data). With ``data.cache_dir`` a second
    run on the same data, tokenizer and settings loads the examples instead of rebuilding them
    (files only: in-memory ``pairs`` have no content key, so they are always tokenised afresh)."""
    from sbert_nli.data.examples import mnr_examples, softmax_examples
    from sbert_nli.model import TINY_BERT

    if not config.data.cache_dir or config.model.name == TINY_BERT or pairs is not None:  # tiny-bert: vocab from texts
        data, heldout = load_training_data(config, pairs)
        if log_progress:
            log.info("data: %s", data.report())
        encoder = build_encoder(config, data)
        build = softmax_examples if config.train.loss == "softmax" else mnr_examples
        return encoder, build(data, encoder.tokenizer, encoder.max_seq_length), data, heldout
    encoder = build_encoder(config, None)
    examples, data, heldout = cached_examples(config, encoder, log_progress)
    return encoder, examples, data, heldout


def cached_examples(config: RunConfig, encoder, log_progress: bool = True):
    """(examples, train data, held-out data) from ``data.cache_dir``, built and stored on a miss."""
    from dataclasses import asdict

    from sbert_nli.data import cache
    from sbert_nli.data.examples import mnr_examples, softmax_examples
    from sbert_nli.data.nli import NLIData, SourceReport

    d, t = config.data, config.train
    key = cache.cache_key(d.train + ([d.eval_nli] if d.eval_nli else []), {
        "columns": d.columns, "quoting": d.quoting, "holdout": d.holdout_fraction, "seed": t.seed, "max_pairs": d.max_train_pairs,
        "synthetic": d.synthetic_pairs, "loss": t.loss, "max_len": encoder.max_seq_length,
        "tokenizer": encoder.tokenizer.backend_tokenizer.to_str()})
    hit = cache.load(d.cache_dir, key)
    if hit is not None:
        examples, meta = hit
        data = NLIData([], [], np.asarray(meta["train_labels"], dtype=np.int64),
                       [SourceReport(**s) for s in meta["sources"]])
        held = meta.get("heldout")
        heldout = None if held is None else NLIData(held["premise"], held["hypothesis"], np.asarray(held["label"]))
        if log_progress:
            log.info("data: %d pairs from the cache %s/%s.npz", len(data), d.cache_dir, key)
        return examples, data, heldout
    data, heldout = load_training_data(config)
    if log_progress:
        log.info("data: %s", data.report())
    build = softmax_examples if t.loss == "softmax" else mnr_examples
    examples = build(data, encoder.tokenizer, encoder.max_seq_length)
    cache.save(d.cache_dir, key, examples, {
        "train_labels": data.label.tolist(), "sources": [asdict(s) for s in data.sources],
        "heldout": None if heldout is None else {"premise": heldout.premise, "hypothesis": heldout.hypothesis,
                                                 "label": heldout.label.tolist()}})
    return examples, data, heldout
