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
    from sbert_nli.model import TINY_BERT, SentenceEncoder, build_tiny_bert, set_attention

    m = config.model
    if m.name == TINY_BERT:
        from sbert_nli.data.shapes import data_shape

        texts = data.premise + data.hypothesis if data_shape(data) == "pair-class" else \
            [t for column in data.texts.values() for t in column]
        encoder = build_tiny_bert(texts, m.tiny_hidden_size, m.tiny_layers, m.tiny_heads,
                                  m.tiny_vocab_size, m.max_seq_length, seed=config.train.seed)
        if m.pooling:
            encoder.pooling = m.pooling
    else:
        encoder = SentenceEncoder.load(m.name, m.pooling, m.max_seq_length, m.trust_remote_code)
    if m.attn_implementation:
        set_attention(encoder.transformer, m.attn_implementation)
    if m.dropout is not None:
        for module in encoder.transformer.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = m.dropout
    pooler = getattr(encoder.transformer, "pooler", None)
    if pooler is not None:  # BERT's pooler is not part of a sentence embedding: freeze it (DDP needs every grad)
        pooler.requires_grad_(False)
    return encoder


def load_training_data(config: RunConfig, pairs=None):
    """(train data, held-out NLI pairs or None) exactly as both engines use them. ``pairs`` (``NLIData``,
    from memory via the Python API) replaces reading ``data.train``; otherwise the data's shape is read
    (or declared) and checked against the loss here, before any tokenising or model loading."""
    from sbert_nli.data.nli import read_nli_file, split_holdout
    from sbert_nli.data.shapes import data_shape, load_training_data as load_shaped

    d, seed = config.data, config.train.seed
    data = pairs if pairs is not None else load_shaped(d.train, d.columns, d.shape, config.train.loss,
                                                       d.score_range or None, d.synthetic_pairs, seed, d.quoting)
    if d.max_train_pairs and d.max_train_pairs < len(data):
        data = data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[: d.max_train_pairs]))
    if data_shape(data) != "pair-class":
        return data, None  # held-out accuracy is the NLI head's (softmax on NLI data only)
    data, heldout = split_holdout(data, d.holdout_fraction, seed)
    if d.eval_nli:
        heldout = read_nli_file(d.eval_nli, d.columns, d.quoting)
    return data, heldout


def prepare_data_and_model(config: RunConfig, log_progress: bool = True, pairs=None):
    """(encoder, tokenised examples, train data, held-out data). With ``data.cache_dir`` a second
    run on the same data, tokenizer and settings loads the examples instead of rebuilding them
    (files only: in-memory ``pairs`` have no content key, so they are always tokenised afresh)."""
    from sbert_nli.data.examples import build_examples
    from sbert_nli.data.shapes import data_shape
    from sbert_nli.model import TINY_BERT

    # tiny-bert's vocab needs the texts; the examples cache holds NLI (pair-class) data only.
    if (not config.data.cache_dir or config.model.name == TINY_BERT or config.train.loss in ("cosine", "cosent")
            or pairs is not None):
        data, heldout = load_training_data(config, pairs)
        if log_progress:
            log.info("data (%s): %s", data_shape(data), data.report())
        encoder = build_encoder(config, data)
        return encoder, build_examples(data, config.train.loss, encoder.tokenizer, encoder.max_seq_length), data, heldout
    encoder = build_encoder(config, None)
    examples, data, heldout = cached_examples(config, encoder, log_progress)
    return encoder, examples, data, heldout


def cached_examples(config: RunConfig, encoder, log_progress: bool = True):
    """(examples, train data, held-out data) from ``data.cache_dir``, built and stored on a miss."""
    from dataclasses import asdict

    from sbert_nli.data import cache
    from sbert_nli.data.examples import build_examples
    from sbert_nli.data.nli import NLIData, SourceReport
    from sbert_nli.data.shapes import data_shape

    d, t = config.data, config.train
    key = cache.cache_key(d.train + ([d.eval_nli] if d.eval_nli else []), {
        "columns": d.columns, "quoting": d.quoting, "holdout": d.holdout_fraction, "seed": t.seed, "max_pairs": d.max_train_pairs,
        "synthetic": d.synthetic_pairs, "loss": t.loss, "shape": d.shape, "max_len": encoder.max_seq_length,
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
        log.info("data (%s): %s", data_shape(data), data.report())
    examples = build_examples(data, t.loss, encoder.tokenizer, encoder.max_seq_length)
    if data_shape(data) != "pair-class":  # the cache's metadata describes NLI data only: pairs and triplets are rebuilt
        return examples, data, heldout
    cache.save(d.cache_dir, key, examples, {
        "train_labels": data.label.tolist(), "sources": [asdict(s) for s in data.sources],
        "heldout": None if heldout is None else {"premise": heldout.premise, "hypothesis": heldout.hypothesis,
                                                 "label": heldout.label.tolist()}})
    return examples, data, heldout
