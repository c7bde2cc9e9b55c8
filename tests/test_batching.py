import numpy as np
import pytest
import torch

from sbert_nli.data.batching import TokenStore, collate, epoch_batches, intern, no_duplicate_batches
from sbert_nli.data.examples import mnr_examples, softmax_examples
from sbert_nli.data.synthetic import synthetic_nli
from sbert_nli.losses import SoftmaxLoss
from sbert_nli.train import make_batch


def test_intern_maps_equal_texts_to_one_id():
    texts, (a, b) = intern(["x", "y", "x"], ["y", "z", "x"])
    assert texts == ["x", "y", "z"] and list(a) == [0, 1, 0] and list(b) == [1, 2, 0]


def test_token_store_matches_the_tokenizer_including_truncation(tiny_encoder):
    tok = tiny_encoder.tokenizer
    texts = ["A man plays a guitar in the park.", "a " * 60, "dog"]
    store = TokenStore.build(texts, tok, max_len=12)
    expected = tok(texts, truncation=True, max_length=12)["input_ids"]
    for i, ids in enumerate(expected):
        assert store.ids[store.offsets[i]:store.offsets[i + 1]].tolist() == ids
    full = tok(texts)["input_ids"]
    assert store.truncated == sum(len(ids) > 12 for ids in full) >= 1
    input_ids, mask = store.pad(np.array([2, 0]))
    assert input_ids.shape == (2, len(expected[0])) and mask[0].sum() == len(expected[2])


@pytest.mark.parametrize("length_group", [False, True])
@pytest.mark.parametrize("groups", [False, True])
def test_every_example_exactly_once_per_epoch(length_group, groups):
    rng = np.random.default_rng(0)
    n = 1003
    lengths = rng.integers(3, 60, n) if length_group else None
    group_ids = rng.integers(0, 300, n) if groups else None
    batches = epoch_batches(n, 16, seed=1, epoch=0, lengths=lengths, groups=group_ids)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    assert len(batches) == -(-n // 16) and all(len(b) == 16 for b in batches[:-1] if not length_group)
    again = epoch_batches(n, 16, seed=1, epoch=0, lengths=lengths, groups=group_ids)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))  # pure function of (seed, epoch)
    other = epoch_batches(n, 16, seed=1, epoch=1, lengths=lengths, groups=group_ids)
    assert not np.array_equal(np.concatenate(other), flat)  # reshuffled every epoch


def test_length_grouping_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 80, 4000)
    pad = lambda bs: sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in bs)  # noqa: E731
    assert pad(epoch_batches(4000, 16, 0, 0, lengths=lengths)) < 0.2 * pad(epoch_batches(4000, 16, 0, 0))


def test_grouping_premises_keeps_hypotheses_together():
    d = synthetic_nli(900, seed=0)
    _, (premise,) = intern(d.premise)
    batches = epoch_batches(len(d), 15, 0, 0, groups=premise)
    distinct = np.mean([len(set(premise[b].tolist())) for b in batches])
    assert distinct <= 6  # 15 pairs from about 5 premises instead of ~15


def test_no_duplicate_sampler_on_heavy_duplication():
    rng = np.random.default_rng(0)
    n = 600
    anchors = rng.integers(0, 40, n)  # each anchor text ~15 times
    positives = 1000 + rng.integers(0, 300, n)
    negatives = np.where(rng.random(n) < 0.5, 5000 + rng.integers(0, 50, n), -1)
    batches = no_duplicate_batches([anchors, positives, negatives], 32, seed=0, epoch=0, lengths=rng.integers(3, 40, n))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))  # every example exactly once
    for b in batches:
        texts = np.concatenate([anchors[b], positives[b], negatives[b][negatives[b] >= 0]])
        assert len(texts) == len(set(texts.tolist()))  # no text twice in a batch
    assert max(len(b) for b in batches) == 32
    second = no_duplicate_batches([anchors, positives, negatives], 32, seed=0, epoch=1)
    assert [b.tolist() for b in second] != [b.tolist() for b in batches]


def test_collate_dedup_rows():
    store = TokenStore(np.arange(10, dtype=np.int32), np.array([0, 2, 5, 6, 10]), 0)
    [(ids, mask)], (a, b) = collate(store, [np.array([1, 1, 3]), np.array([0, 2, 1])], dedup=True)
    assert ids.shape == (4, 4) and list(a) == [1, 1, 3] and list(b) == [0, 2, 1]
    [(ids2, _)], (a2, b2) = collate(store, [np.array([1, 1, 3]), np.array([0, 2, 1])], dedup=False)
    assert ids2.shape == (6, 4) and np.array_equal(ids2[a2], ids[a]) and np.array_equal(ids2[b2], ids[b])


def test_length_split_chunks_cut_padding_and_keep_rows():
    lengths = [30, 29, 5, 4, 4, 28, 6, 3]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    store = TokenStore(np.arange(offsets[-1], dtype=np.int32) + 1, offsets, 0)
    column = np.arange(8)
    [(whole, _)], (p_whole,) = collate(store, [column], dedup=True, split_cost=0)
    chunks, (p_split,) = collate(store, [column], dedup=True, split_cost=8)
    assert [c[0].shape for c in chunks] == [(3, 30), (5, 6)]  # 3 long rows, then 5 short ones
    stacked = np.concatenate([np.pad(ids, ((0, 0), (0, 30 - ids.shape[1]))) for ids, _ in chunks])
    assert np.array_equal(stacked[p_split], whole[p_whole])  # every entry still finds its own tokens


def test_speed_switches_do_not_change_the_loss_of_a_batch(tiny_encoder):
    """fp32: dedup on/off, length splits and bucketing (pad_to_multiple_of: the padding width changes)
    give the same loss for a fixed batch."""
    d = synthetic_nli(300, seed=0)
    ex = softmax_examples(d, tiny_encoder.tokenizer, 32)
    head = SoftmaxLoss(tiny_encoder.dim)
    index = np.arange(0, 48)
    losses, widths = [], set()
    for dedup in (True, False):
        for split in (0, 4):
            for multiple in (0, 8):
                chunks, pos, labels, _ = make_batch(ex, index, dedup, torch.device("cpu"), split, pad_multiple=multiple)
                widths |= {(multiple, ids.shape[1]) for ids, _ in chunks}
                with torch.no_grad():
                    emb = torch.cat([tiny_encoder(ids, mask) for ids, mask in chunks])
                    losses.append(head(emb, pos[0], pos[1], labels).item())
    assert len(losses) == 8 and max(losses) - min(losses) <= 1e-6
    assert all(w % 8 == 0 for m, w in widths if m == 8) and any(w % 8 for m, w in widths if m == 0)
    mnr = mnr_examples(d, tiny_encoder.tokenizer, 32)
    assert "100 (anchor, positive) examples: 100 triplets" in mnr.note


TRICKY = ["Café au lait, s'il vous plaît!", "北京 is in China.", "Ünïcödé — dashes… and “quotes”", "x" * 300,
          "Numbers 3.14, 2,000 and (12.5%)", "emoji 😀 here", "tab\tinside", "  padded  ", "UPPER lower MiXeD",
          "a|b¶c§d", "", "don't won't can't", "e-mail: a@b.c", "#hashtag @user", "ñ ç ß ø å"]


@pytest.mark.parametrize("which", ["minilm", "tiny"])
def test_joined_fast_tokenisation_equals_the_tokenizer(which, minilm, tiny_encoder):
    from transformers import AutoTokenizer

    from sbert_nli.data import batching

    tok = AutoTokenizer.from_pretrained(minilm) if which == "minilm" else tiny_encoder.tokenizer

    def backend():
        b = __import__("tokenizers").Tokenizer.from_str(tok.backend_tokenizer.to_str())
        b.no_padding()
        b.no_truncation()
        return b

    texts = [f"{t} {i}" for i in range(12) for t in TRICKY if "¶" not in t] + TRICKY[:3]
    flat, lengths = batching._encode_joined(backend(), [t.strip() for t in texts])
    # MiniLM's vocab has the separator: the fast path is taken (and verified itself on its sample);
    # the tiny vocab lacks every separator: the exact per-text route, same ids either way.
    assert (flat is not None) == (which == "minilm")
    store = TokenStore.build(texts, tok, max_len=24)
    expected = tok([t.strip() for t in texts], truncation=True, max_length=24)["input_ids"]
    for i, ids in enumerate(expected):
        assert store.ids[store.offsets[i]:store.offsets[i + 1]].tolist() == ids, texts[i]
    with_sep = texts + ["a ¶ b § c ‡ d | e"]  # every separator occurs: the exact per-text route
    assert batching._encode_joined(backend(), with_sep)[0] is None
