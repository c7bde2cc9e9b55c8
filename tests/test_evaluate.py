import json

import numpy as np
import pytest

from sbert_nli.cli import main
from sbert_nli.data.sts import read_sts
from sbert_nli.evaluate import evaluate_sts, nli_metrics, sts_metrics
from sbert_nli.model import SentenceEncoder
from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, heatmap_size, save_heatmaps, HEATMAP_DPI


def test_sts_metrics_match_embedding_similarity_evaluator(minilm, data):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    sts = read_sts(str(data / "stsbenchmark/sts-dev.csv"))
    ours = evaluate_sts(SentenceEncoder.load(minilm), sts)
    evaluator = EmbeddingSimilarityEvaluator(sts.sentence1, sts.sentence2, list(sts.score / 5.0),
                                             similarity_fn_names=["cosine", "euclidean", "manhattan", "dot"])
    theirs = evaluator(SentenceTransformer(minilm, device="cpu"))
    for sim in ("cosine", "euclidean", "manhattan", "dot"):
        for corr in ("pearson", "spearman"):
            reference = [v for k, v in theirs.items() if k.endswith(f"{corr}_{sim}")][0] * 100
            assert ours[f"{sim}_{corr}"] == pytest.approx(reference, abs=0.01), (sim, corr)


def test_minilm_stsb_test_matches_the_published_figure(minilm, data):
    """all-MiniLM-L6-v2 on STS benchmark test: 82.03 cosine Spearman (MTEB)."""
    sts = read_sts(str(data / "stsbenchmark/sts-test.csv"))
    score = evaluate_sts(SentenceEncoder.load(minilm), sts)["cosine_spearman"]
    assert score == pytest.approx(82.03, abs=0.10)


def test_sts_metrics_on_embeddings_whose_cosine_follows_the_gold_scores():
    gold = np.array([0.0, 1.0, 2.5, 5.0])
    angles = np.deg2rad(90 - gold * 18)  # cosine to [1, 0] rises with the gold score
    emb1 = np.tile([[1.0, 0.0, 0.0]], (4, 1))
    emb2 = np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=1)
    m = sts_metrics(emb1, emb2, gold)
    assert m["cosine_spearman"] == pytest.approx(100.0) and m["euclidean_spearman"] == pytest.approx(100.0)
    assert m["cosine_pearson"] < 100.0  # cosine is not linear in the angle


def test_confusion_matrix_sums_to_row_count():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    m = nli_metrics(pred, gold)
    assert np.sum(m["confusion"]) == 500 and m["pairs"] == 500
    assert m["accuracy"] == pytest.approx(np.mean(gold == pred))
    assert m["per_class"]["neutral"]["support"] == int((gold == 1).sum())
    perfect = nli_metrics(gold, gold)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0


def test_heatmap_png_size_and_matrix(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    sim = cosine_matrix(rng.normal(size=(len(EXAMPLE_SENTENCES), 16)))
    assert np.array_equal(sim, sim.T) and np.all(np.diag(sim) == 1.0)
    path = tmp_path / "h.png"
    size = save_heatmaps(path, [("m", sim)], EXAMPLE_SENTENCES)
    w, h = heatmap_size(1)
    assert Image.open(path).size == size == (round(w * HEATMAP_DPI), round(h * HEATMAP_DPI))


def test_similarity_and_compare_commands(minilm, tmp_path, capsys, data):
    from sbert_nli.config import resolve
    from sbert_nli.train import train

    smoke = tmp_path / "smoke"
    train(resolve("smoke", None, {"train": {"epochs": 1}, "data": {"synthetic_pairs": 1500}}), smoke, progress=False)
    assert main(["similarity", minilm, "--plot", str(tmp_path / "s.png"), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("<->") == 3 and (tmp_path / "s.png").stat().st_size > 10_000
    # the built-in paraphrase pairs share no content words, yet MiniLM ranks one first
    first = out.splitlines()[0]
    pairs = [set(EXAMPLE_SENTENCES[i:i + 2]) for i in range(0, 8, 2)]
    assert any(sum(s in first for s in pair) == 2 for pair in pairs)

    sts = str(data / "stsbenchmark/sts-dev.csv")
    code = main(["compare", minilm, str(smoke), "--sts", sts, "--plot", str(tmp_path / "c.png"),
                 "--json", str(tmp_path / "c.json")])
    assert code == 0
    table = capsys.readouterr().out
    assert "| model | sts-dev.csv Spearman |" in table and str(smoke) in table
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["table"][0]["sts-dev.csv Spearman"] > 80 > result["table"][1]["sts-dev.csv Spearman"]
    assert (tmp_path / "c.png").stat().st_size > 10_000
