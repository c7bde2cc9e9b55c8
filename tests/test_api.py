"""The Python API: in-memory training data equals files, load/encode/predict equal the library and the
CLI, overrides resolve by TOML key, errors are the CLI's, and training twice leaves the process as found."""

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import sbert_nli
from sbert_nli.errors import SbertNliError

TINY = dict(preset="smoke", max_steps=6, batch_size=16, precision="fp32", seed=9, holdout_fraction=0.0,
            tiny_hidden_size=32, tiny_vocab_size=300, progress=False)


@pytest.fixture(scope="module")
def nli_rows():
    """Synthetic NLI rows with the hub's integer labels, plus one -1 row (no gold label) to drop."""
    from sbert_nli.data.synthetic import synthetic_nli

    d = synthetic_nli(240, seed=3)
    rows = [{"premise": p, "hypothesis": h, "label": int(lab)} for p, h, lab in zip(d.premise, d.hypothesis, d.label)]
    return rows[:100] + [{"premise": "A cat sleeps.", "hypothesis": "A dog barks.", "label": -1}] + rows[100:]


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(folder / "model.safetensors")),
            **{f"head.{k}": v for k, v in load_file(str(folder / "nli_head" / "head.safetensors")).items()}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, nli_rows):
    """The same run from a file, a datasets.Dataset and a DataFrame (module-scoped: trained once)."""
    import datasets
    import pandas as pd

    root = tmp_path_factory.mktemp("api")
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in nli_rows), encoding="utf-8")
    results = {
        "file": sbert_nli.train(output=root / "file", train=str(path), **TINY),
        "dataset": sbert_nli.train(output=root / "dataset", train=datasets.Dataset.from_list(nli_rows), **TINY),
        "dataframe": sbert_nli.train(output=root / "dataframe", train=pd.DataFrame(nli_rows), **TINY),
    }
    return root, results


def test_in_memory_data_trains_the_same_weights_as_the_file(trained):
    root, results = trained
    reference = _weights(root / "file")
    for kind in ("dataset", "dataframe"):
        weights = _weights(root / kind)
        assert weights.keys() == reference.keys()
        for name, value in reference.items():
            assert torch.equal(weights[name], value), (kind, name)
        assert results[kind]["train_pairs"] == results["file"]["train_pairs"] == 240  # the -1 row dropped
        assert results[kind]["steps"] == 6
    saved = (root / "dataset" / "sbert_nli_config.toml").read_text()
    assert 'train = ["in-memory:datasets.Dataset"]' in saved and "seed = 9" in saved and "max_steps = 6" in saved
    assert "| in-memory:pandas.DataFrame | 241 | 240 | 1 | 0 |" in (root / "dataframe" / "README.md").read_text()


def test_load_encode_equals_sentence_transformers(trained, minilm):
    from sentence_transformers import SentenceTransformer

    sentences = ["A man plays a guitar.", "Someone makes music.", "A chef cooks dinner in a small kitchen."]
    for path in (str(trained[0] / "dataset"), minilm):
        ours = sbert_nli.load(path, device="cpu").encode(sentences)
        theirs = SentenceTransformer(path, device="cpu").encode(sentences)
        assert ours.dtype == np.float32 and ours.shape == theirs.shape == (3, ours.shape[1])
        assert np.abs(ours - theirs).max() <= 1e-5
    assert sbert_nli.load(minilm).encode("one sentence").shape == (1, 384)


def test_predict_equals_the_cli(trained):
    folder = str(trained[0] / "file")
    pairs = [("A man plays a guitar.", "Someone makes music."), ("Two dogs run on a beach.", "A cat sleeps.")]
    model = sbert_nli.load(folder)
    batched = model.predict([p for p, _ in pairs], [h for _, h in pairs])
    (premise, hypothesis), from_list = pairs[0], batched[0]
    cli = subprocess.run([sys.executable, "-m", "sbert_nli", "predict", folder, premise, hypothesis, "--json"],
                         capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout)
    single = model.predict(premise, hypothesis)
    assert single["label"] == expected["label"] == from_list["label"]
    assert single["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert from_list["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    alone = model.predict(*pairs[1])  # batch composition changes float rounding only
    assert batched[1]["label"] == alone["label"] and batched[1]["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
    with pytest.raises(SbertNliError, match="1 premise"):
        model.predict(["a"], ["b", "c"])


def test_evaluate_and_figures(trained, data):
    from matplotlib.figure import Figure

    import matplotlib

    backend = matplotlib.get_backend()
    folder = trained[0] / "file"
    sts = sbert_nli.load_sts(data / "stsbenchmark" / "sts-dev.csv")
    small = sbert_nli.load_sts({"sentence1": sts.sentence1[:50], "sentence2": sts.sentence2[:50], "score": sts.score[:50]})
    snli = sbert_nli.load_nli(data / "nli" / "normalized" / "snli_dev.jsonl")
    result = sbert_nli.evaluate(folder, sts=small, nli=snli.subset(range(300)))
    assert result["sts"]["in-memory:dict"]["pairs"] == 50 and -100 <= result["sts"]["in-memory:dict"]["cosine_spearman"] <= 100
    assert result["nli"][str(data / "nli" / "normalized" / "snli_dev.jsonl")]["pairs"] == 300
    fig = sbert_nli.plot_similarity({"a": folder, "b": sbert_nli.load(folder)}, path=trained[0] / "h.png")
    assert isinstance(fig, Figure) and len([ax for ax in fig.axes if ax.images]) == 2
    assert (trained[0] / "h.png").stat().st_size > 10_000
    curves = sbert_nli.plot_training(folder)
    assert isinstance(curves, Figure) and len(curves.axes[0].lines[0].get_xdata()) >= 1
    assert matplotlib.get_backend() == backend  # figures are built without pyplot: no backend switch


def test_in_memory_errors_are_the_file_errors(tmp_path, nli_rows):
    import pandas as pd

    bad = nli_rows[:3] + [{"premise": "p", "hypothesis": "h", "label": 7}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bad), encoding="utf-8")
    with pytest.raises(SbertNliError) as from_file:
        sbert_nli.load_nli(str(path))
    with pytest.raises(SbertNliError) as from_memory:
        sbert_nli.train(output=tmp_path / "out", train=pd.DataFrame(bad), **TINY)
    assert str(from_memory.value) == str(from_file.value).replace(str(path), "in-memory:pandas.DataFrame")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SbertNliError, match="missing column.*label.*columns found: premise, hypothesis"):
        sbert_nli.load_nli([{"premise": "a", "hypothesis": "b"}])
    with pytest.raises(SbertNliError, match="pass one split"):
        import datasets

        sbert_nli.load_nli(datasets.DatasetDict({"train": datasets.Dataset.from_list(nli_rows[:2])}))


def test_class_label_names_not_their_order_decide_the_label(nli_rows):
    import datasets

    ds = datasets.Dataset.from_list([{**r, "label": ["entailment", "neutral", "contradiction"][r["label"]]}
                                     for r in nli_rows if r["label"] >= 0])
    encoded = ds.class_encode_column("label")  # alphabetical: contradiction 0, entailment 1, neutral 2
    assert encoded.features["label"].names[0] == "contradiction"
    assert sbert_nli.load_nli(encoded).label.tolist() == sbert_nli.load_nli(ds).label.tolist()


def test_overrides_by_toml_key(monkeypatch):
    from dataclasses import dataclass

    from sbert_nli import api, config

    assert api.config_overrides({"lr": 1e-5, "pooling": "cls", "train__seed": 3, "data.max_train_pairs": 9}) == {
        "train": {"lr": 1e-5, "seed": 3}, "model": {"pooling": "cls"}, "data": {"max_train_pairs": 9}}
    with pytest.raises(SbertNliError, match="unknown option 'learning_rate' \\(did you mean 'lr'\\?\\)"):
        api.config_overrides({"learning_rate": 1e-5})

    @dataclass
    class Other:
        seed: int = 0

    monkeypatch.setitem(config.SECTIONS, "other", Other)
    with pytest.raises(SbertNliError, match=r"'seed' is a key of \[train\] and \[other\]; pass train__seed= or other__seed="):
        api.config_overrides({"seed": 1})
    with pytest.raises(SbertNliError, match="train.precision must be one of"):
        sbert_nli.train(output="never-written", preset="smoke", precision="fp64")
    assert not os.path.exists("never-written")


def _process_state() -> dict:
    import random

    import matplotlib

    loggers = [logging.getLogger(n) for n in ("", "sbert_nli", "transformers", "sentence_transformers",
                                              "sentence_transformers.base.data_collator")]
    return {
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
        "threads": (torch.get_num_threads(), torch.get_num_interop_threads()),
        "logging": [(lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers],
        "environ": dict(os.environ), "cwd": os.getcwd(), "backend": matplotlib.get_backend(),
        "torch": (torch.get_default_dtype(), torch.is_grad_enabled(), torch.are_deterministic_algorithms_enabled(),
                  torch.get_float32_matmul_precision()),
        "rng": (random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state().tolist()),
        "api": (sbert_nli.train, sbert_nli.load),
    }


def test_two_train_calls_leave_the_process_as_found(tmp_path, nli_rows):
    # First imports of these libraries set environment variables and logging handlers once (e.g.
    # KMP_DUPLICATE_LIB_OK, transformers' stderr handler): import-time effects, not train()'s.
    import datasets  # noqa: F401
    import sentence_transformers  # noqa: F401
    import transformers  # noqa: F401

    torch.manual_seed(1234)
    before = _process_state()
    first = sbert_nli.train(output=tmp_path / "a", train=nli_rows, **TINY)
    assert _process_state() == before
    second = sbert_nli.train(output=tmp_path / "a", train=nli_rows, overwrite=True, **TINY)
    assert _process_state() == before
    st = sbert_nli.train(output=tmp_path / "st", train=nli_rows, engine="sentence-transformers", **TINY)
    assert _process_state() == before
    assert first["steps"] == second["steps"] == st["steps"] == 6
    assert callable(sbert_nli.train) and callable(sbert_nli.evaluate)  # submodule imports must not shadow them


def test_import_is_light():
    code = "import sys, sbert_nli; sbert_nli.train; assert not [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]"
    subprocess.run([sys.executable, "-c", code], check=True)
