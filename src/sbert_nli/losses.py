"""Training objectives over sentence embeddings. Each loss is an ``nn.Module`` that owns its head.

Both take the embeddings of a batch's distinct sentences plus, per role, the row of each example's
sentence, so a sentence shared by several examples is encoded once (see ``data.batching.collate``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sbert_nli.errors import SbertNliError

LABELS = ("entailment", "neutral", "contradiction")


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
    embeddings    [N, D]: the batch's distinct sentence embeddings
    anchor_rows   [B] long: row of each example's anchor (the premise)
    pos_rows      [B] long: row of its positive (an entailed hypothesis)
    neg_rows      [K] long: rows of the batch's hard negatives (contradictions), K >= 0
    ============  ==========================================================

    For anchor i the candidates are every positive of the batch and every hard negative of the
    batch; the target is positive i. ``symmetric`` adds the positive -> anchor direction (candidates:
    all anchors). ``scale`` 20 is temperature 0.05.
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = False):
        super().__init__()
        self.scale = scale
        self.symmetric = symmetric

    def forward(self, embeddings, anchor_rows, pos_rows, neg_rows, gather=None) -> torch.Tensor:
        emb = F.normalize(embeddings.float(), p=2, dim=-1)  # similarity maths in fp32
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
