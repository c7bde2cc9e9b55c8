"""--report-to: TensorBoard event files read back with TensorBoard's own reader hold every logged scalar
at its step (both engines), the resolved config, and one value per step after a rerun; wandb is refused
in one line when it is not installed."""

import importlib.util
import json

import pytest

import sbert_nli
from sbert_nli.cli import main

RUN = dict(preset="smoke", batch_size=16, precision="fp32", seed=5, holdout_fraction=0.0, synthetic_pairs=300,
           tiny_hidden_size=32, tiny_vocab_size=300, log_every=2, report_to="tensorboard", progress=False)


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder / "tensorboard"))
    accumulator.Reload()
    return accumulator


def _scalars(accumulator, tag) -> dict[int, float]:
    events = accumulator.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: a step logged twice: {steps}"
    return {e.step: e.value for e in events}


@pytest.fixture(scope="module")
def sts_dev(tmp_path_factory, data):
    rows = (data / "stsbenchmark" / "sts-dev.csv").read_text().splitlines()[:120]
    path = tmp_path_factory.mktemp("sts") / "dev.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_tensorboard_holds_every_logged_scalar_at_its_step(tmp_path, sts_dev):
    out = tmp_path / "run"
    results = sbert_nli.train(output=out, max_steps=9, eval_every=4, eval_sts=sts_dev, **RUN)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 9]
    events = _events(out)
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("pairs_per_s", "train/pairs_per_s"),
                     ("dev_spearman", "eval/dev_spearman")):
        logged = {r["step"]: r[key] for r in records if key in r}
        assert logged, key
        assert _scalars(events, tag) == pytest.approx(logged, rel=1e-6), tag  # float32 in the event file
    assert sorted(_scalars(events, "eval/dev_spearman")) == [4, 8, 9]
    assert _scalars(events, "final/dev_spearman") == pytest.approx({9: results["dev_spearman"]}, rel=1e-6)
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'report_to = "tensorboard"' in config_text and "max_steps = 9" in config_text and "seed = 5" in config_text
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")

    # A fresh run into the same folder (--overwrite): the curves show that run only, one value per step.
    sbert_nli.train(output=out, max_steps=3, overwrite=True, **{**RUN, "seed": 6})
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert _scalars(_events(out), "train/loss") == pytest.approx({r["step"]: r["loss"] for r in again}, rel=1e-6)
    assert sorted(_scalars(_events(out), "train/loss")) == [2, 3]


def test_sentence_transformers_engine_reports_the_same_tags(tmp_path, sts_dev):
    out = tmp_path / "st"
    sbert_nli.train(output=out, max_steps=4, eval_every=3, eval_sts=sts_dev, engine="sentence-transformers", **RUN)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3, 4]  # loss at 2 and 4, the dev score at 3 and 4 (one line a step)
    events = _events(out)
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("dev_spearman", "eval/dev_spearman")):
        logged = {r["step"]: r[key] for r in records if key in r}
        assert logged and _scalars(events, tag) == pytest.approx(logged, rel=1e-6), tag
    assert sorted(_scalars(events, "eval/dev_spearman")) == [3, 4]
    assert sorted(_scalars(events, "train/pairs_per_s")) == [2, 4]
    assert all(v > 0 for v in _scalars(events, "train/pairs_per_s").values())


def test_no_tracker_writes_nothing_and_missing_wandb_is_one_line(tmp_path, capsys):
    out = tmp_path / "none"
    sbert_nli.train(output=out, max_steps=2, **{**RUN, "report_to": "none"})
    assert not (out / "tensorboard").exists()
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    capsys.readouterr()  # only the command's own stderr below (the API run may log, as an earlier CLI call set up)
    code = main(["train", "--preset", "smoke", "--output", str(tmp_path / "w"), "--report-to", "wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: --report-to wandb needs the wandb package: pip install wandb"]
    assert not (tmp_path / "w").exists()


def test_wandb_gets_the_same_records(tmp_path, monkeypatch):
    """The wandb client's calls, recorded by a stand-in module (no account or network in tests)."""
    import importlib.machinery
    import sys
    import types

    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "w"
    results = sbert_nli.train(output=out, max_steps=5, **{**RUN, "report_to": "wandb", "holdout_fraction": 0.2})
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    init = calls[0][1]
    assert init["dir"] == str(out) and init["config"]["train"]["report_to"] == "wandb" and init["name"] == "w"
    logged = [c for c in calls if c[0] == "log"]
    assert [(step, values) for _, step, values in logged[:-1]] == [
        (r["step"], {"train/loss": r["loss"], "train/lr": r["lr"], "train/pairs_per_s": r["pairs_per_s"]})
        for r in records]
    assert logged[-1][1] == 5 and calls[-1] == ("finish",)
    assert logged[-1][2] == {"final/heldout_accuracy": results["heldout_accuracy"]}


@pytest.mark.parametrize("undefined", [None, float("nan")])
def test_an_undefined_score_is_left_out_not_a_crash(tmp_path, undefined):
    """A dev Spearman over constant similarities is undefined (None in results.json, NaN from the
    library's evaluator): trackers skip it and keep the defined values. Fails before: float(None)."""
    from sbert_nli.tracking import open_tracker

    with open_tracker("tensorboard", tmp_path, {"train": {"lr": 1.0}}) as tracker:
        tracker.log({"step": 1, "loss": 0.5, "dev_spearman": undefined})
        tracker.log_final({"dev_spearman": undefined, "heldout_accuracy": 0.75}, 1)
    events = _events(tmp_path)
    assert _scalars(events, "train/loss") == {1: 0.5} and _scalars(events, "final/heldout_accuracy") == {1: 0.75}
    assert "eval/dev_spearman" not in events.Tags()["scalars"] and "final/dev_spearman" not in events.Tags()["scalars"]
