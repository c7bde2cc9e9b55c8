"""Pinned per-step loss trajectory (torchtune's recipe-test style): the safety net for any change to
the training loop. Smoke preset, fp32, CPU, seed 42, 30 optimiser steps, every step's loss logged.

Pinned on b52f52a (before the loop was restructured). Tolerance: two runs of this test on that commit
gave bit-identical losses (difference 0.0); 1e-5 leaves room for a different BLAS reduction order on
another CPU (fp32 round-off, ~1e-7 relative per op) while any change in what the loop computes (an
extra RNG draw moving dropout masks, a different batch order, a changed weighting, a step of the
schedule) moves these losses by 1e-3 or more.
"""

import json

import numpy as np

from sbert_nli.config import resolve
from sbert_nli.train import train

PINNED = [
    1.0798635, 1.0435581, 1.0829524, 1.0833313, 1.0599926, 1.2196469,
    1.1972194, 1.1509991, 1.0601444, 1.1780685, 0.9916208, 1.0836182,
    1.0009392, 0.9328860, 1.0079151, 1.0449942, 0.9202729, 1.1524311,
    1.0103900, 0.9226245, 1.0274261, 0.8996801, 1.0096736, 0.9936140,
    0.9584593, 0.8821393, 0.9554719, 0.9088356, 1.0121576, 0.9237386,
]
TOLERANCE = 1e-5


def test_smoke_loss_trajectory_is_pinned(tmp_path):
    config = resolve("smoke", None, {"train": {"max_steps": 30, "log_every": 1, "precision": "fp32", "device": "cpu",
                                               "seed": 42},
                                     "data": {"synthetic_pairs": 3000}})
    train(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = np.array([r["loss"] for r in records])
    assert np.abs(losses - np.array(PINNED)).max() <= TOLERANCE, losses.round(7).tolist()
