import pytest

from sbert_nli.config import RunConfig, from_dict, list_presets, read_toml, resolve, to_toml
from sbert_nli.errors import SbertNliError


def test_defaults_are_the_paper_recipe():
    c = resolve(None, None, {})
    assert (c.train.batch_size, c.train.lr, c.train.warmup_ratio, c.train.weight_decay, c.train.epochs) == (16, 2e-5, 0.1, 0.01, 1)
    assert c.train.head_features == ["u", "v", "|u-v|"] and c.model.max_seq_length == 128
    assert c.data.train == ["snli", "mnli"] and c.train.loss == "softmax"


def test_presets_exist_and_resolve():
    assert {"smoke", "sbert-paper", "mnr"} <= set(list_presets())
    smoke = resolve("smoke", None, {})
    assert smoke.model.name == "builtin:tiny-bert" and smoke.data.train == ["builtin:synthetic"]
    assert resolve("mnr", None, {}).train.batch_size >= 64


def test_precedence_preset_then_file_then_cli(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nlr = 3e-4\nbatch_size = 8\n[data]\ntrain = ["pairs.jsonl", "snli"]\neval_sts = "stsb:validation"\n')
    c = resolve("smoke", str(cfg), {"train": {"batch_size": "4"}})
    assert c.train.lr == 3e-4 and c.train.batch_size == 4 and c.model.name == "builtin:tiny-bert"
    # data paths in a config file are relative to the file
    assert c.data.train == [str(tmp_path / "pairs.jsonl"), "snli"] and c.data.eval_sts == "stsb:validation"


def test_roundtrip_through_toml(tmp_path):
    c = resolve("smoke", None, {"data": {"columns": {"premise": "s1"}}})
    path = tmp_path / "saved.toml"
    path.write_text(to_toml(c.to_dict()))
    assert from_dict(read_toml(path)).to_dict() == c.to_dict()


@pytest.mark.parametrize("overrides, fragment", [
    ({"train": {"lrr": 1}}, "did you mean 'lr'"),
    ({"trian": {"lr": 1}}, "did you mean 'train'"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number"),
    ({"train": {"lr": 0}}, "train.lr must be > 0"),
    ({"train": {"batch_size": 0}}, "batch_size must be >= 1"),
    ({"train": {"warmup_ratio": 1.5}}, "warmup_ratio must be within [0, 1]"),
    ({"train": {"epochs": True}}, "must be an integer"),
    ({"model": {"pooling": "sum"}}, "model.pooling must be one of"),
    ({"train": {"head_features": ["u", "w"]}}, "head_features"),
])
def test_bad_config_values_name_the_key(overrides, fragment):
    with pytest.raises(SbertNliError, match=None) as info:
        resolve(None, None, overrides)
    assert fragment in str(info.value)


def test_unknown_preset():
    with pytest.raises(SbertNliError, match="unknown preset 'nope'.*smoke"):
        resolve("nope", None, {})
    assert isinstance(RunConfig().train.seed, int)
