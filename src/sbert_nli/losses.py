"""Training objectives over sentence embeddings. Each loss is an ``nn.Module`` that owns its head.

Every loss takes the embeddings of a batch's distinct sentences plus, per role, the row of each
example's sentence, so a sentence shared by several examples is encoded once (see
``data.batching.collate``). Each equals the sentence-transformers loss of the same name on the same
embeddings (values and gradients, tests/test_loss_parity.py). Which loss takes which data shape:
``data.shapes.LOSS_SHAPES`` (checked before any work by ``data.shapes.check_loss_shape``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sbert_nli.errors import SbertNliError

LABELS = ("entailment", "neutral", "contradiction")

def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Similarity maths in at least fp32 (autocast hands us bf16/fp16 embeddings); fp64 stays fp64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class SoftmaxLoss(nn.Module):
    """SBERT's classification objective: ``softmax(W [u; v; |u-v|])`` with cross-entropy.

    ============  ==========================================================
    input         meaning
    ============  ==========================================================
    embeddings    [N, D] float: the batch's distinct sentence embeddings
    a_rows        [B] long: row of each pair's premise in ``embeddings``
    b_rows        [B] long: row of each pair's hypothesis
    labels        [B] long: 0 entailment, 1 neutral, 2 contradiction
    ============  ==========================================================

    ``features`` picks and orders the parts fed to the head: any of ``u``, ``v``, ``|u-v|``,
    ``u*v`` (the paper's ablation; its best is the default (u, v, |u-v|)).

    Example::

        loss = SoftmaxLoss(dim=384)
        value = loss(torch.randn(5, 384), torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([0, 2]))
    """

    def __init__(self, dim: int, num_labels: int = 3, features: tuple[str, ...] = ("u", "v", "|u-v|")):
        super().__init__()
        self.dim = dim
        self.num_labels = num_labels
        self.features = tuple(features)
        self.classifier = nn.Linear(len(self.features) * dim, num_labels)

    def logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        parts = {"u": u, "v": v}
        if "|u-v|" in self.features:
            parts["|u-v|"] = (u - v).abs()
        if "u*v" in self.features:
            parts["u*v"] = u * v
        return self.classifier(torch.cat([parts[f] for f in self.features], dim=-1))

    def forward(self, embeddings, a_rows, b_rows, labels) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings[a_rows], embeddings[b_rows]).float(), labels)

    # The head is part of the model folder (sentence-transformers drops it; we keep it).
    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "head.safetensors"))
        (folder / "config.json").write_text(json.dumps({
            "type": "SoftmaxLoss", "dim": self.dim, "num_labels": self.num_labels,
            "features": list(self.features), "labels": list(LABELS),
        }, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> SoftmaxLoss:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "head.safetensors").is_file():
            raise SbertNliError(
                f"{folder.parent} has no trained NLI head ({folder.name}/); train it with `sbert-nli train --loss softmax` "
                "(models saved by other tools keep no head)"
            )
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            head = cls(int(config["dim"]), int(config["num_labels"]), tuple(config["features"]))
            head.load_state_dict(load_file(str(folder / "head.safetensors")))
        except (KeyError, ValueError, RuntimeError, OSError) as exc:
            raise SbertNliError(f"{folder}: unreadable NLI head ({type(exc).__name__}); retrain or restore it") from None
        return head


class MultipleNegativesRankingLoss(nn.Module):
    """In-batch-negatives ranking loss (InfoNCE) over cosine similarity times ``scale``.

    ============  ==========================================================
    input         meaning
    ============  ==========================================================
    embeddings    [N, D] float: the batch's distinct sentence embeddings
    anchor_rows   [B] long: row of each example's anchor (a premise, question, ...)
    pos_rows      [B] long: row of its positive (an entailed hypothesis, answer, ...)
    neg_rows      [K] long: rows of the batch's hard negatives, K >= 0 (0: pairs; B: triplets)
    gather        optional cross-rank candidates (``distributed.gather_candidates``)
    ============  ==========================================================

    Data shapes: (anchor, positive) pairs, (anchor, positive, negative) triplets, or NLI pairs
    turned into triplets. For anchor i the candidates are every positive of the batch and every
    hard negative of the batch; the target is positive i. ``symmetric`` adds the positive -> anchor
    direction (candidates: all anchors), averaged with the first. ``scale`` 20 is temperature 0.05.
    Returns a scalar, the mean over anchors. Source: Henderson et al. 2017 (Smart Reply, sec. 4.4);
    equals sentence-transformers' ``MultipleNegativesRankingLoss`` (``symmetric``:
    ``directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"``).

    Example::

        loss = MultipleNegativesRankingLoss()
        value = loss(torch.randn(6, 384), torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = False):
        super().__init__()
        self.scale = scale
        self.symmetric = symmetric

    def forward(self, embeddings, anchor_rows, pos_rows, neg_rows, gather=None) -> torch.Tensor:
        emb = F.normalize(_fp32(embeddings), p=2, dim=-1)
        anchors, positives, negatives = emb[anchor_rows], emb[pos_rows], emb[neg_rows]
        offset = 0
        if gather is not None:  # cross-rank candidates: (tensors, this rank's offset into the gathered batch)
            (positives, negatives, all_anchors), offset = gather(positives, negatives, anchors)
        else:
            all_anchors = anchors
        candidates = torch.cat([positives, negatives], dim=0)
        target = torch.arange(len(anchors), device=emb.device) + offset
        loss = F.cross_entropy(self.scale * anchors @ candidates.T, target)
        if self.symmetric:
            loss = (loss + F.cross_entropy(self.scale * emb[pos_rows] @ all_anchors.T, target)) / 2
        return loss


class CosineSimilarityLoss(nn.Module):
    """The SBERT paper's regression objective: MSE between ``cos(u, v)`` and the gold score.

    ============  ==========================================================
    input         meaning
    ============  ==========================================================
    embeddings    [N, D] float: the batch's distinct sentence embeddings
    a_rows        [B] long: row of each pair's first sentence
    b_rows        [B] long: row of its second sentence
    scores        [B] float: gold similarity normalised to [0, 1] (STS 0-5 divided by 5)
    ============  ==========================================================

    Data shape: scored pairs (``pair-score``). Returns ``mean((cos(u_i, v_i) - score_i)^2)``, a scalar.
    Source: Reimers & Gurevych 2019, sec. 3 "Regression Objective Function" (Table 2: NLI model then
    STSb train); equals sentence-transformers' ``CosineSimilarityLoss`` (MSE, identity transform).

    Example::

        loss = CosineSimilarityLoss()
        value = loss(torch.randn(4, 384), torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0.8, 0.1]))
    """

    def forward(self, embeddings, a_rows, b_rows, scores) -> torch.Tensor:
        emb = _fp32(embeddings)
        cos = F.cosine_similarity(emb[a_rows], emb[b_rows], dim=-1)
        return F.mse_loss(cos, scores.to(cos.dtype))


class CoSENTLoss(nn.Module):
    """CoSENT: a ranking loss over all pairs of the batch ordered by gold score.

    ============  ==========================================================
    input         meaning
    ============  ==========================================================
    embeddings    [N, D] float: the batch's distinct sentence embeddings
    a_rows        [B] long: row of each pair's first sentence
    b_rows        [B] long: row of its second sentence
    scores        [B] float: gold similarity (only its order matters)
    ============  ==========================================================

    Data shape: scored pairs (``pair-score``). With ``c_i = scale * cos(u_i, v_i)`` it returns
    ``log(1 + sum over (i, j) with score_i > score_j of exp(c_j - c_i))``, a scalar: every pair
    scored higher by the gold standard should have the higher cosine. The batch is one ranking, so
    gradient accumulation must not split it (the trainer caches gradients instead, see
    ``gradcache``). Source: Su 2022 / Huang et al. 2024 (CoSENT, TASLP); equals
    sentence-transformers' ``CoSENTLoss`` with ``pairwise_cos_sim``.

    Example::

        loss = CoSENTLoss()
        value = loss(torch.randn(4, 384), torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0.8, 0.1]))
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, embeddings, a_rows, b_rows, scores) -> torch.Tensor:
        emb = _fp32(embeddings)
        cos = self.scale * F.cosine_similarity(emb[a_rows], emb[b_rows], dim=-1)
        # diff[i, j] = c_j - c_i, kept where score_i > score_j (ties and lower pairs contribute nothing).
        diff = cos[None, :] - cos[:, None]
        higher = scores[:, None] > scores[None, :]
        terms = torch.cat([diff.new_zeros(1), diff[higher]])  # the leading 0 is the "1 +" inside the log
        return torch.logsumexp(terms, dim=0)


def build_loss(name: str, dim: int, head_features=("u", "v", "|u-v|"), mnr_scale: float = 20.0,
               mnr_symmetric: bool = False, cosent_scale: float = 20.0) -> nn.Module:
    """The loss module for config name ``name`` (``config.LOSSES``; shapes: ``data.shapes.LOSS_SHAPES``)."""
    if name == "softmax":
        return SoftmaxLoss(dim, features=tuple(head_features))
    if name == "mnr":
        return MultipleNegativesRankingLoss(mnr_scale, mnr_symmetric)
    if name == "cosine":
        return CosineSimilarityLoss()
    if name == "cosent":
        return CoSENTLoss(cosent_scale)
    raise SbertNliError(f"unknown loss {name!r}: choose softmax, mnr, cosine or cosent")
