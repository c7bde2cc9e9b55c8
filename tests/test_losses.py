import math

import numpy as np
import pytest
import torch

from sbert_nli.errors import SbertNliError
from sbert_nli.losses import MultipleNegativesRankingLoss, SoftmaxLoss


def test_softmax_loss_on_a_known_input():
    head = SoftmaxLoss(dim=2)
    with torch.no_grad():
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        head.classifier.weight[0, 4] = 1.0  # logit 0 = |u-v|[0]
    emb = torch.tensor([[1.0, 0.0], [3.0, 5.0]])
    loss = head(emb, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]))
    # logits (2, 0, 0): CE = -log(e^2 / (e^2 + 2))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)


def test_head_feature_ablation_sizes():
    assert SoftmaxLoss(8, features=("u", "v", "|u-v|", "u*v")).classifier.in_features == 32
    assert SoftmaxLoss(8, features=("|u-v|",)).classifier.in_features == 8


def test_head_save_and_load(tmp_path):
    head = SoftmaxLoss(4, features=("u", "v", "u*v"))
    head.save(tmp_path / "nli_head")
    again = SoftmaxLoss.load(tmp_path / "nli_head")
    assert again.features == ("u", "v", "u*v")
    assert torch.equal(again.classifier.weight, head.classifier.weight)
    with pytest.raises(SbertNliError, match="no trained NLI head"):
        SoftmaxLoss.load(tmp_path / "missing")


def _mnr_by_hand(a, p, n, scale, symmetric):
    def cos(x, y):
        return x @ y / (np.linalg.norm(x) * np.linalg.norm(y))

    cands = list(p) + list(n)
    total = 0.0
    for i, anchor in enumerate(a):
        logits = np.array([scale * cos(anchor, c) for c in cands])
        total += -(logits[i] - np.log(np.exp(logits).sum()))
    loss = total / len(a)
    if symmetric:
        back = 0.0
        for i, pos in enumerate(p):
            logits = np.array([scale * cos(pos, x) for x in a])
            back += -(logits[i] - np.log(np.exp(logits).sum()))
        loss = (loss + back / len(a)) / 2
    return loss


@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mnr_equals_hand_computation(with_negatives, symmetric):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 5))
    anchors, positives = [0, 1, 2], [3, 4, 5]
    negatives = [6, 7] if with_negatives else []
    loss = MultipleNegativesRankingLoss(scale=20.0, symmetric=symmetric)(
        torch.tensor(emb, dtype=torch.float32), torch.tensor(anchors), torch.tensor(positives),
        torch.tensor(negatives, dtype=torch.long))
    expected = _mnr_by_hand(emb[anchors], emb[positives], emb[negatives], 20.0, symmetric)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
