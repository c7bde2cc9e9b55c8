import json
import os

import numpy as np
import pytest
import torch

from sbert_nli.cli import main
from sbert_nli.config import from_dict, read_toml, resolve
from sbert_nli.train import lr_factor, param_groups, train


def test_schedule_warmup_then_linear_decay():
    total, warm = 100, 10
    assert lr_factor(0, total, warm) == 0.0
    assert lr_factor(5, total, warm) == 0.5
    assert lr_factor(10, total, warm) == 1.0  # end of warm-up: the peak
    assert lr_factor(55, total, warm) == pytest.approx(0.5)
    assert lr_factor(99, total, warm) == pytest.approx(1 / 90)
    assert lr_factor(100, total, warm) == 0.0  # last step
    assert lr_factor(0, 10, 0) == 1.0  # no warm-up


def test_no_weight_decay_on_bias_and_layernorm(tiny_encoder):
    decay, no_decay = param_groups([tiny_encoder], 0.01)
    names = {id(p): n for n, p in tiny_encoder.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0


def test_smoke_preset_learns_and_saves_a_loadable_model(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "smoke"
    assert main(["-q", "train", "--preset", "smoke", "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("held-out NLI accuracy: ")[1].split()[0])
    assert accuracy >= 0.8  # chance is 0.33
    for name in ("modules.json", "model.safetensors", "nli_head/head.safetensors", "sbert_nli_config.toml",
                 "metrics.jsonl", "README.md", "training_curves.png", "results.json"):
        assert (out / name).exists(), name
    assert from_dict(read_toml(out / "sbert_nli_config.toml")).to_dict() == resolve("smoke", None, {}).to_dict()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]
    sentences = ["A man plays a guitar.", "Two dogs run on the beach for a competition.", "A chef cooks dinner."]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n")
    assert main(["encode", str(out), "--input", str(tmp_path / "s.txt"), "--output", str(tmp_path / "e.npy")]) == 0
    ours = np.load(tmp_path / "e.npy")
    theirs = SentenceTransformer(str(out), device="cpu").encode(sentences)
    assert ours.shape == (3, 64) and np.abs(ours - theirs).max() <= 1e-5
    assert main(["predict", str(out), "A tall man plays a guitar in the park.", "A man sings a song.", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["probabilities"]) == {"entailment", "neutral", "contradiction"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_head_is_trained_and_saved(tmp_path):
    from sbert_nli.losses import SoftmaxLoss

    config = resolve("smoke", None, {"train": {"max_steps": 5, "lr": 1e-2},
                                      "data": {"synthetic_pairs": 300, "holdout_fraction": 0.0}})
    torch.manual_seed(config.train.seed)
    untrained = SoftmaxLoss(64).classifier.weight.detach().clone()  # same seed, same init as the run's head
    train(config, tmp_path, progress=False)
    trained = SoftmaxLoss.load(tmp_path / "nli_head").classifier.weight
    assert trained.shape == untrained.shape and not torch.allclose(trained, untrained)


def test_minilm_on_real_nli_pairs(minilm, data, tmp_path):
    """A few hundred steps on SNLI dev as string-label jsonl plus int-label quoted tsv."""
    from sentence_transformers import SentenceTransformer

    from sbert_nli.data.nli import load_nli, split_holdout
    from sbert_nli.evaluate import evaluate_nli
    from sbert_nli.losses import SoftmaxLoss
    from sbert_nli.model import SentenceEncoder

    files = [str(data / "nli/normalized/snli_dev.jsonl"), str(data / "nli/original/MJ-Jang-BECEL/data/snli/validation.tsv")]
    out = tmp_path / "minilm"
    code = main(["-q", "train", "--model", minilm, "--train", *files, "--holdout", "0.1", "--max-steps", "200",
                 "--lr", "1e-4", "--batch-size", "16", "--max-seq-length", "64", "--output", str(out), "--no-progress"])
    assert code == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.05  # the loss falls

    _, held = split_holdout(load_nli(files), 0.1, seed=42)
    torch.manual_seed(0)
    untrained = evaluate_nli(SentenceEncoder.load(minilm, max_seq_length=64), SoftmaxLoss(384), held)["accuracy"]
    results = json.loads((out / "results.json").read_text())
    assert results["heldout_accuracy"] > untrained + 0.1

    texts = held.premise[:40] + held.hypothesis[:40]
    ours = SentenceEncoder.load(str(out)).encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_tokenised_examples_cache_round_trip(minilm, data, tmp_path):
    from sbert_nli.prepare import prepare_data_and_model

    config = resolve(None, None, {"model": {"name": minilm, "max_seq_length": 64},
                                  "data": {"train": [str(data / "nli/normalized/snli_dev.jsonl")], "holdout_fraction": 0.1,
                                           "max_train_pairs": 2000, "cache_dir": str(tmp_path / "cache")},
                                  "train": {"loss": "mnr"}})
    _, first, data1, held1 = prepare_data_and_model(config)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    _, second, data2, held2 = prepare_data_and_model(config)
    assert np.array_equal(first.store.ids, second.store.ids) and first.note == second.note
    assert all(np.array_equal(first.roles[k], second.roles[k]) for k in first.roles)
    assert np.array_equal(data1.label, data2.label) and held1.premise == held2.premise
    assert data2.report().startswith(data1.report().split(" |")[0])
    config.model.max_seq_length = 32  # a different setting: a different entry
    prepare_data_and_model(config)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_dev_evaluation_keeps_the_best_model(data, tmp_path):
    out = tmp_path / "best"
    config = resolve("smoke", None, {"data": {"synthetic_pairs": 900, "eval_sts": str(data / "stsbenchmark/sts-dev.csv")},
                                     "train": {"max_steps": 30, "eval_every": 10, "log_every": 5}})
    results = train(config, out, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dev = [r["dev_spearman"] for r in records if "dev_spearman" in r]
    assert [r["step"] for r in records if "dev_spearman" in r] == [10, 20, 30]
    assert results["dev_spearman"] == pytest.approx(max(dev), abs=1e-6)  # the saved model is the best one


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_last_dev_evaluation_is_not_repeated_at_the_end(data, tmp_path, monkeypatch, keep_best):
    """With eval_every the loop evaluates the last step; the end of the run reuses that score (or the
    kept best's) instead of encoding the dev set again (~6 s on MiniLM's STSb dev)."""
    from sbert_nli.engines import native

    calls = []
    real = native.evaluate_dev
    monkeypatch.setattr(native, "evaluate_dev", lambda run: calls.append(1) or real(run))
    out = tmp_path / "run"
    config = resolve("smoke", None, {"data": {"synthetic_pairs": 900, "eval_sts": str(data / "stsbenchmark/sts-dev.csv")},
                                     "train": {"max_steps": 30, "eval_every": 10, "keep_best": keep_best}})
    results = train(config, out, progress=False)
    dev = [r["dev_spearman"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
           if "dev_spearman" in r]
    assert len(calls) == 3 and len(dev) == 3
    assert results["dev_spearman"] == (max(dev) if keep_best else dev[-1])
    from sbert_nli.evaluate import evaluate_sts
    from sbert_nli.data.sts import read_sts
    from sbert_nli.model import SentenceEncoder

    saved = evaluate_sts(SentenceEncoder.load(str(out)), read_sts(str(data / "stsbenchmark/sts-dev.csv")))
    assert saved["cosine_spearman"] == pytest.approx(results["dev_spearman"], abs=1e-6)  # the score is the saved model's


def test_mnr_run_resumes_exactly_from_a_checkpoint(tmp_path):
    args = ["-q", "train", "--preset", "smoke", "--loss", "mnr", "--set", "data.synthetic_pairs=900",
            "--batch-size", "8", "--max-steps", "10", "--save-every", "5", "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--resume", str(tmp_path / "a/checkpoints/step-00000005")]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    assert not (tmp_path / "a/nli_head").exists()  # MNR trains no classification head


def test_auto_precision_picks_bf16_only_where_native(monkeypatch):
    from sbert_nli import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu) == "fp32"
    assert precision.resolve_precision("fp32", cpu) == "fp32"


def test_auto_precision_on_this_cpu_follows_its_flags():
    """The bug: oneDNN's "bf16 supported" is true on every AVX-512 CPU (it emulates bf16 without
    avx512_bf16/AMX), so auto picked bf16 and ran ~3x slower than fp32 on such a CPU (this machine).
    Fails before the fix on an AVX-512 CPU without native bf16."""
    from sbert_nli import precision

    native = bool({"avx512_bf16", "amx_bf16"} & precision.cpu_flags())
    if torch.backends.cpu.get_cpu_capability() != "AVX512" or os.environ.get("ONEDNN_MAX_CPU_ISA"):
        native = False
    assert precision.resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("flags, capability, isa, expected", [
    ({"avx2", "avx512f", "avx512bw"}, "AVX512", None, False),          # AVX-512 without bf16: emulated
    ({"avx2"}, "AVX2", None, False),                                     # AVX2 only (e.g. EPYC Zen 2/3)
    ({"avx512f", "avx512_bf16"}, "AVX512", None, True),                  # Cooper Lake, Zen 4
    ({"avx512f", "amx_bf16", "amx_tile"}, "AVX512", None, True),         # Sapphire Rapids
    ({"avx512f", "avx512_bf16"}, "AVX2", None, False),                   # ATEN_CPU_CAPABILITY=avx2
    ({"avx512f", "avx512_bf16"}, "AVX512", "AVX2", False),               # ONEDNN_MAX_CPU_ISA=AVX2
    ({"avx512f", "avx512_bf16"}, "AVX512", "AVX512_CORE_BF16", True),
])
def test_native_bf16_needs_the_flag_and_no_isa_cap(monkeypatch, flags, capability, isa, expected):
    from sbert_nli import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert precision.cpu_has_native_bf16() is expected


def test_native_training_never_imports_sentence_transformers(tmp_path):
    """Whole-process overhead (issue 18): `import sentence_transformers` costs 2-8 s (it pulls sklearn,
    datasets, pandas); the native engine and saving a loadable folder need none of it. Fails before:
    SentenceEncoder.save imported it to read its version."""
    import subprocess
    import sys

    code = ("import sys; from sbert_nli.cli import main; "
            f"code = main(['-q', 'train', '--preset', 'smoke', '--set', 'train.max_steps=2', '--output', r'{tmp_path / 'm'}', "
            "'--no-progress']); "
            "assert code == 0, code; "
            "assert 'sentence_transformers' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    config = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())
    from importlib.metadata import version

    assert config["__version__"]["sentence_transformers"] == version("sentence-transformers")


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_gradient_clipping_is_torchs_bit_for_bit(max_norm):
    """clip_gradients skips torch's multiply-by-1 on the CPU when nothing is clipped; clipped or not,
    the gradients and the returned norm are exactly clip_grad_norm_'s."""
    from sbert_nli.engines.native import clip_gradients

    torch.manual_seed(0)
    shapes = [(300, 64), (64,), (64, 64), (1,)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn(a.shape)
        b.grad = a.grad.clone()
    theirs[1].grad = ours[1].grad = None  # a parameter without a gradient is skipped by both
    n1 = clip_gradients(ours, max_norm, torch.device("cpu"))
    n2 = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert torch.equal(n1, n2)
    for a, b in zip(ours, theirs):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)
    clipped = float(n2) > max_norm
    assert clipped == (max_norm == 1e-3)  # both branches are exercised
