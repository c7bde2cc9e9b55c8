"""Each of our losses equals the sentence-transformers loss of the same name on the same embeddings:
values and gradients to 1e-6, for every loss and every data shape it accepts.

The library's losses take a model and tokenised features; a stub model maps each feature row to a
given embedding (``input_ids[:, 0]`` is the row), so the library's whole ``forward`` runs, column
merging included, on exactly the embeddings our loss sees."""

from __future__ import annotations

import pytest
import torch

from sbert_nli import losses as ours

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

B, D = 12, 16


class _Stub(torch.nn.Module):
    """A 'SentenceTransformer' whose embedding of feature row r is ``table[input_ids[r, 0]]``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, features):
        return {**features, "sentence_embedding": self.table[features["input_ids"][:, 0]]}


def _features(rows: torch.Tensor) -> dict:
    return {"input_ids": rows[:, None].clone(), "attention_mask": torch.ones(len(rows), 1, dtype=torch.long)}


def _columns(n_columns: int, seed: int):
    """A leaf table of ``n_columns * B`` random float64 embeddings; column c is rows c*B .. c*B+B-1."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(n_columns * B, D, generator=g, dtype=torch.float64)
    return table, [torch.arange(c * B, (c + 1) * B) for c in range(n_columns)]


def _compare(our_loss, st_loss_of, n_columns: int, labels=None, seed: int = 0):
    table, cols = _columns(n_columns, seed)
    mine = table.clone().requires_grad_(True)
    value = our_loss(mine, *cols, *([] if labels is None else [labels]))
    value.backward()
    theirs = table.clone().requires_grad_(True)
    reference = st_loss_of(_Stub(theirs))([_features(c) for c in cols], labels if labels is not None else None)
    reference.backward()
    assert value.item() == pytest.approx(reference.item(), abs=1e-6, rel=0)
    assert torch.allclose(mine.grad, theirs.grad, atol=1e-6, rtol=0)
    assert mine.grad.abs().max() > 1e-4  # the comparison is not between two zero gradients
    return value.item()


@pytest.mark.parametrize("shape", ["pair", "triplet"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("scale", [20.0, 7.5])
def test_mnr_equals_library(shape, symmetric, scale):
    n = 2 if shape == "pair" else 3
    loss = ours.MultipleNegativesRankingLoss(scale, symmetric)

    def ours_call(emb, anchors, positives, negatives=torch.zeros(0, dtype=torch.long)):
        return loss(emb, anchors, positives, negatives)

    directions = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"} if symmetric else {}
    _compare(ours_call, lambda m: st_losses.MultipleNegativesRankingLoss(m, scale=scale, **directions), n)


@pytest.mark.parametrize("seed", [0, 1])
def test_cosine_similarity_loss_equals_library(seed):
    scores = torch.rand(B, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    _compare(ours.CosineSimilarityLoss(), lambda m: st_losses.CosineSimilarityLoss(m), 2, scores, seed)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_equals_library(ties, scale):
    g = torch.Generator().manual_seed(3)
    # STS scores come in steps of 0.2/5: ties are common and must be excluded from the ranking pairs.
    scores = (torch.randint(0, 6, (B,), generator=g) / 5.0) if ties else torch.rand(B, generator=g)
    scores = scores.to(torch.float64)
    _compare(ours.CoSENTLoss(scale), lambda m: st_losses.CoSENTLoss(m, scale=scale), 2, scores)


def test_cosent_by_hand():
    """Two pairs, score 1 > score 0: loss = log(1 + exp(c_1 - c_0))."""
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    value = ours.CoSENTLoss(scale=1.0)(emb, torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([1.0, 0.0]))
    c0, c1 = 2 ** -0.5, 0.0
    assert value.item() == pytest.approx(float(torch.log1p(torch.exp(torch.tensor(c1 - c0)))), rel=1e-6)


def test_cosine_loss_by_hand():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    value = ours.CosineSimilarityLoss()(emb, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.2]))
    assert value.item() == pytest.approx((2 ** -0.5 - 0.2) ** 2, rel=1e-6)


def test_low_precision_embeddings_are_scored_in_fp32():
    table, (a, b) = _columns(2, 0)
    scores = torch.rand(B, dtype=torch.float32)
    for loss in (ours.CosineSimilarityLoss(), ours.CoSENTLoss()):
        full = loss(table.float(), a, b, scores)
        half = loss(table.bfloat16(), a, b, scores)
        assert half.dtype == torch.float32
        assert half.item() == pytest.approx(full.item(), rel=2e-2)


@pytest.mark.parametrize(("loss", "shape", "ok"), [
    ("softmax", "pair-class", True), ("softmax", "pair", False), ("softmax", "pair-score", False),
    ("mnr", "pair", True), ("mnr", "triplet", True), ("mnr", "pair-class", True), ("mnr", "pair-score", False),
    ("cosine", "pair-score", True), ("cosine", "triplet", False), ("cosent", "pair-score", True),
    ("cosent", "pair-class", False),
])
def test_loss_shape_check(loss, shape, ok):
    from sbert_nli.data.shapes import check_loss_shape
    from sbert_nli.errors import SbertNliError

    if ok:
        check_loss_shape(loss, shape)
        return
    with pytest.raises(SbertNliError, match=f"--loss {loss} trains on .* but the training data is {shape}; use --loss"):
        check_loss_shape(loss, shape)
