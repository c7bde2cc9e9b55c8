"""Data shapes: pairs, triplets and scored pairs from local files (column mapping, detection), the STS
benchmark file as released, hub datasets in sentence-transformers' published layouts; score
normalisation; the data report; which loss takes which shape, checked before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sbert_nli.data import shapes
from sbert_nli.errors import SbertNliError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_sts_train_as_released_is_read_as_scored_pairs(data):
    raw = [line.split("\t") for line in (data / "stsbenchmark" / "sts-train.csv").read_text().split("\n") if line.strip()]
    out = shapes.load_training_data([str(data / "stsbenchmark" / "sts-train.csv")], loss="cosine")
    assert out.shape == "pair-score" and len(out) == len(raw) == 5749
    assert out.texts["sentence1"][:3] == [r[5] for r in raw[:3]] and out.texts["sentence2"][7] == raw[7][6]
    np.testing.assert_allclose(out.score, [float(r[4]) / 5 for r in raw])  # 0-5 normalised as the reference: /5
    report = out.report()
    assert "pair-score, 5749 rows, kept 5749" in report and "scores 0-5 (detected) normalised to 0-1" in report


def test_pairs_with_a_column_mapping(tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", [{"q": "how old is the sun", "a": "4.6 billion years"},
                                          {"q": "what is water", "a": "H2O"}, {"q": "  ", "a": "dropped"}])
    out = shapes.load_training_data([path], {"anchor": "q", "positive": "a"}, loss="mnr")
    assert out.shape == "pair" and out.texts == {"anchor": ["how old is the sun", "what is water"],
                                                 "positive": ["4.6 billion years", "H2O"]}
    assert "pair, 3 rows, kept 2, dropped 1 with an empty sentence" in out.report()


def test_triplets_are_detected_from_their_column_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("anchor,positive,negative\na man sleeps,a person rests,a man runs\nx,y,z\n", encoding="utf-8")
    out = shapes.load_training_data([str(path)], loss="mnr")
    assert out.shape == "triplet" and out.texts["negative"] == ["a man runs", "z"]
    with pytest.raises(SbertNliError, match="--loss cosine trains on pair-score data, but the training data is triplet"):
        shapes.load_training_data([str(path)], loss="cosine")


def test_nli_files_stay_nli(data):
    out = shapes.load_training_data([str(data / "nli" / "normalized" / "snli_dev.jsonl")], loss="mnr")
    assert shapes.data_shape(out) == "pair-class" and len(out) == 9842
    assert "9842 NLI pairs (pair-class: entailment 3329" in shapes.describe(out)


@pytest.mark.parametrize(("scores", "declared", "expected", "note"), [
    ([0.0, 0.5, 1.0], None, [0.0, 0.5, 1.0], "scores 0-1 (detected) kept as they are"),
    ([0, 2.5, 5], None, [0.0, 0.5, 1.0], "scores 0-5 (detected) normalised"),
    ([-1, 0, 1], [-1, 1], [0.0, 0.5, 1.0], "scores -1-1 (declared) normalised to 0-1 as (score - -1) / 2"),
])
def test_score_ranges(tmp_path, scores, declared, expected, note):
    path = _jsonl(tmp_path / "s.jsonl", [{"sentence1": f"a{i}", "sentence2": f"b{i}", "score": s} for i, s in enumerate(scores)])
    out = shapes.load_training_data([path], loss="cosent", score_range=declared)
    np.testing.assert_allclose(out.score, expected)
    assert note in out.sources[0].note


@pytest.mark.parametrize(("scores", "declared", "message"), [
    ([0, 3, 10], None, r"scores span \[0, 10\], neither 0-1 nor 0-5; declare their range"),
    ([0, 3, 5], [0, 1], r"outside the declared data.score_range \[0, 1\]"),
    ([0, "high", 5], None, r"s.jsonl:2: score 'high' is not a number"),
    ([2, 2, 2], None, "every score is the same"),
])
def test_bad_scores_are_one_error(tmp_path, scores, declared, message):
    path = _jsonl(tmp_path / "s.jsonl", [{"sentence1": f"a{i}", "sentence2": f"b{i}", "score": s} for i, s in enumerate(scores)])
    with pytest.raises(SbertNliError, match=message):
        shapes.load_training_data([path], loss="cosine", score_range=declared)


def test_rows_without_a_score_are_dropped_and_counted(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("sentence1,sentence2,score\na,b,1\nc,d,\ne,f,4\n", encoding="utf-8")
    out = shapes.load_training_data([str(path)], loss="cosine")
    assert len(out) == 2 and "dropped 1 with no score" in out.report()


def test_mixed_shapes_and_unmatched_columns(tmp_path):
    pairs = _jsonl(tmp_path / "p.jsonl", [{"anchor": "a", "positive": "b"}])
    triplets = _jsonl(tmp_path / "t.jsonl", [{"anchor": "a", "positive": "b", "negative": "c"}])
    with pytest.raises(SbertNliError, match="different shapes .*p.jsonl is pair; .*t.jsonl is triplet"):
        shapes.load_training_data([pairs, triplets], loss="mnr")
    odd = _jsonl(tmp_path / "o.jsonl", [{"s1": "a", "s2": "b", "gold": 3}, {"s1": "c", "s2": "d", "gold": 1}])
    with pytest.raises(SbertNliError, match=r"missing column\(s\) sentence1, sentence2, score; columns found: s1, s2, gold; "
                                            r"map them with --columns sentence1=COLUMN,sentence2=COLUMN,score=COLUMN"):
        shapes.load_training_data([odd], loss="cosine")
    out = shapes.load_training_data([odd], {"sentence1": "s1", "sentence2": "s2", "score": "gold"}, loss="cosine")
    assert out.shape == "pair-score"


def test_declared_shape_wins_over_detection(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"anchor": "a", "positive": "b", "negative": "c"}])
    out = shapes.load_training_data([path], shape="pair", loss="mnr")
    assert out.shape == "pair" and list(out.texts) == ["anchor", "positive"]


# sentence-transformers' published layouts (https://huggingface.co/datasets/sentence-transformers/all-nli, /stsb)
HUB = {
    ("sentence-transformers/all-nli", "pair"): {"anchor": ["a man plays"], "positive": ["someone plays"]},
    ("sentence-transformers/all-nli", "triplet"): {"anchor": ["a"], "positive": ["b"], "negative": ["c"]},
    ("sentence-transformers/all-nli", "pair-class"): {"premise": ["p", "p"], "hypothesis": ["h", "i"], "label": [0, 2]},
    ("sentence-transformers/all-nli", "pair-score"): {"sentence1": ["p", "p"], "sentence2": ["h", "i"], "score": [1.0, 0.0]},
    ("sentence-transformers/stsb", None): {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.2, 0.96]},
}


@pytest.mark.parametrize(("name", "shape", "loss"), [
    ("all-nli:pair", "pair", "mnr"), ("all-nli:triplet", "triplet", "mnr"), ("all-nli:pair-class", "pair-class", "softmax"),
    ("all-nli:pair-score", "pair-score", "cosine"), ("stsb:train", "pair-score", "cosent"),
    ("sentence-transformers/all-nli:triplet", "triplet", "mnr"),
])
def test_hub_layouts(monkeypatch, name, shape, loss):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, subset=None, split=None):
        calls.append((repo, subset, split))
        return datasets.Dataset.from_dict(HUB[(repo, subset)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    out = shapes.load_training_data([name], loss=loss)
    assert shapes.data_shape(out) == shape and calls[0][2] == "train"
    if shape == "pair-score":
        assert out.score.max() <= 1.0 and "0-1 (detected)" in out.sources[0].note


def test_config_checks_declared_shape_and_ranges():
    from sbert_nli.config import resolve

    with pytest.raises(SbertNliError, match="--loss softmax trains on pair-class data, but data.shape pair-score is"):
        resolve(None, None, {"data": {"shape": "pair-score"}})
    with pytest.raises(SbertNliError, match="data.score_range must be"):
        resolve(None, None, {"train": {"loss": "cosine"}, "data": {"score_range": [5, 0]}})
    with pytest.raises(SbertNliError, match="unknown role"):
        resolve(None, None, {"data": {"columns": {"query": "q"}}})
    c = resolve(None, None, {"train": {"loss": "mnr"}, "data": {"columns": {"anchor": "q", "positive": "a"}}})
    assert c.data.columns == {"anchor": "q", "positive": "a"}


def test_hub_names_in_a_config_file_are_not_paths(tmp_path):
    from sbert_nli.config import read_toml

    (tmp_path / "local.jsonl").write_text("{}\n")
    path = tmp_path / "c.toml"
    path.write_text('[data]\ntrain = ["all-nli:triplet", "sentence-transformers/all-nli:pair", "local.jsonl", "stsb:train"]\n')
    train = read_toml(path)["data"]["train"]
    assert train[:2] == ["all-nli:triplet", "sentence-transformers/all-nli:pair"] and train[3] == "stsb:train"
    assert train[2] == str(tmp_path / "local.jsonl")


def test_loss_shape_mismatch_is_refused_before_any_work(data, tmp_path):
    """One error line, exit 2, before the model is loaded (the model path does not even exist)."""
    out = subprocess.run([sys.executable, "-m", "sbert_nli", "train", "--train",
                          str(data / "stsbenchmark" / "sts-train.csv"), "--model", str(tmp_path / "no-model"),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --loss softmax trains on pair-class data, but the training data is pair-score; "
                                "use --loss cosent or --loss cosine") and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()


def test_examples_for_each_shape(tiny_encoder, tmp_path):
    from sbert_nli.data.examples import build_examples

    tok, n = tiny_encoder.tokenizer, 32
    pairs = shapes.TextData("pair", {"anchor": ["a man", "a dog"], "positive": ["a person", "an animal"]})
    ex = build_examples(pairs, "mnr", tok, n)
    assert ex.kind == "mnr" and list(ex.roles["negative"]) == [-1, -1] and len(ex) == 2
    triplets = shapes.TextData("triplet", {"anchor": ["a man", "a dog"], "positive": ["a person", "an animal"],
                                           "negative": ["a dog", "a car"]})
    ex = build_examples(triplets, "mnr", tok, n)
    assert ex.roles["negative"][0] == ex.roles["anchor"][1]  # "a dog" is one interned text
    scored = shapes.TextData("pair-score", {"sentence1": ["a", "b"], "sentence2": ["c", "a"]}, np.array([0.2, 1.0]))
    ex = build_examples(scored, "cosine", tok, n)
    assert ex.kind == "score" and ex.labels.dtype == np.float32 and list(ex.labels) == pytest.approx([0.2, 1.0])
    assert ex.roles["a"][0] == ex.roles["b"][1]


@pytest.mark.parametrize(("preset", "loss"), [("sbert-stage2", "cosine"), ("sbert-stage2-cosent", "cosent")])
def test_stage2_presets_are_the_papers_table_2_setup(preset, loss):
    from sbert_nli.config import resolve

    c = resolve(preset, None, {"model": {"name": "runs/nli"}})
    assert (c.train.loss, c.train.epochs, c.train.batch_size, c.train.lr, c.train.warmup_ratio) == (loss, 4, 16, 2e-5, 0.1)
    assert c.data.train == ["stsb:train"] and c.data.eval_sts == "stsb:validation"
    assert c.train.keep_best and c.train.eval_every > 0 and c.model.name == "runs/nli"
