"""Typed run configuration: dataclasses with explicit defaults, TOML files, presets, overrides.

Resolution order (later wins): dataclass defaults -> ``--preset NAME`` -> ``--config FILE`` ->
command-line options. The resolved config is validated once, here, and saved beside every model
and checkpoint as ``sbert_nli_config.toml`` so a run can be reproduced from its folder alone.

Defaults are the SBERT paper recipe (Reimers & Gurevych, 2019): batch 16, AdamW lr 2e-5, weight
decay 0.01, 10 % linear warm-up, 1 epoch, mean pooling, (u, v, |u-v|) softmax head.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from sbert_nli.errors import SbertNliError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parent / "configs"
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSSES = ("softmax", "mnr", "cosine", "cosent")  # data shapes each takes: data.shapes.LOSS_SHAPES
ENGINES = ("native", "sentence-transformers")
HEAD_FEATURES = ("u", "v", "|u-v|", "u*v")
HUB_DATA_NAMES = ("snli", "mnli", "stsb")
SUITE_AGGREGATIONS = ("all", "mean", "wmean")  # sbert_nli.sts_suite explains each and its source
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class ModelConfig:
    # A local folder (sentence-transformers or plain Hugging Face), a hub id, or "builtin:tiny-bert"
    # (random-init BERT whose WordPiece vocab is trained on the training data: no downloads).
    name: str = "bert-base-uncased"
    pooling: str | None = None  # None: keep a sentence-transformers model's own, else "mean"
    max_seq_length: int = 128
    trust_remote_code: bool = False
    dropout: float | None = None  # override the transformer's hidden and attention dropout
    # None: transformers' default (sdpa); "eager", "sdpa", or on a GPU with flash-attn installed
    # "flash_attention_2" (padding-free: it unpads the batch inside attention).
    attn_implementation: str | None = None
    # Shape of "builtin:tiny-bert" (ignored otherwise).
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 2
    tiny_vocab_size: int = 1000


@dataclass
class DataConfig:
    # Hub names ("snli", "mnli", "all-nli:pair", "stsb:train", owner/name[:subset]), "builtin:synthetic",
    # or local .jsonl/.json/.csv/.tsv/.parquet files (and the STS benchmark's sts-train.csv as released).
    train: list[str] = field(default_factory=lambda: ["snli", "mnli"])
    columns: dict[str, str] = field(default_factory=dict)  # role -> column, e.g. premise = "sentence1"
    quoting: str = "auto"  # .csv/.tsv/.txt: "auto", "csv" (quoted fields) or "none" (a " is text)
    # pair-class (NLI), pair, triplet, pair-score, or "auto": detected from the column names (data.shapes).
    shape: str = "auto"
    # [low, high] of pair-score gold scores, normalised to [0, 1]; empty = detect (0-1 kept, 0-5 divided by 5).
    score_range: list[float] = field(default_factory=list)
    holdout_fraction: float = 0.0  # fixed split of the training pairs for held-out NLI accuracy
    eval_sts: str | None = None  # STS file (or "stsb") for dev evaluation during/after training
    eval_nli: str | None = None  # NLI file for held-out accuracy of the trained head
    synthetic_pairs: int = 6000  # size of "builtin:synthetic"
    max_train_pairs: int = 0  # 0 = all; otherwise a deterministic subset (quick experiments)
    cache_dir: str | None = None  # tokenised-data cache; None = no cache


@dataclass
class TrainConfig:
    engine: str = "native"
    loss: str = "softmax"
    epochs: int = 1
    max_steps: int = 0  # 0 = run all epochs
    batch_size: int = 16  # per device; global batch = batch_size x world size x grad_accum
    grad_accum: int = 1
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Clip the encoder and the softmax head as one vector (SBERT's original fit(), the default) or the
    # encoder only (false). The sentence-transformers engine always clips as its HF Trainer does: the
    # encoder only.
    clip_head: bool = True
    seed: int = 42
    precision: str = "auto"  # bf16 where the hardware runs it natively (same quality, measured), else fp32
    device: str = "auto"  # auto = cuda > mps > cpu
    head_features: list[str] = field(default_factory=lambda: ["u", "v", "|u-v|"])
    mnr_scale: float = 20.0
    mnr_symmetric: bool = False
    mnr_gather_across_ranks: bool = False
    cosent_scale: float = 20.0  # CoSENT's scale (inverse temperature), sentence-transformers' default
    # Speed switches (each measured in benchmarks/RESULTS.md; none changes the loss of a batch).
    group_by_length: bool = True  # length-grouped but still shuffled batches (less padding)
    # softmax: keep a premise's hypotheses in one batch. Off by default: faster (+12 %), but it cost
    # 11 STSb points after 300 steps on MiniLM (benchmarks/RESULTS.md), so it is not quality-neutral.
    group_premises: bool = False
    dedup_batch: bool = True  # encode each distinct sentence once per batch
    # Native engine: linear layers on the batch's real tokens only, attention per sentence (BERT and
    # RoBERTa families with SDPA attention; see padding_free.py). Same function; hidden-state dropout
    # masks drawn over real tokens only.
    padding_free: bool = True
    # Native engine, CPU, not compiled: hidden-state dropout masks (and attention-probability ones where
    # padding_free runs) drawn by numpy's PCG64 seeded from torch's generator, not torch's serial CPU
    # generator; same inverted dropout, another random stream (see dropout.py).
    fast_dropout: bool = True
    # Padded training: cut a batch into length-sorted chunks when it saves > N padded tokens per chunk
    # (0 = off). Padding-free training always runs one chunk (nothing padded to save in its linear layers).
    split_padding_cost: int = 64
    fused_adamw: bool = True
    embedding_grad_buffer: bool = True  # word-embedding gradient added in place, only used rows reset (single process)
    reuse_host_memory: bool = True  # CPU, CLI only: keep freed memory mapped (process-wide, one-way; see host_memory.py)
    pad_to_multiple_of: int = 0  # bucketing: chunk widths rounded up to a multiple (0 = off; with compile: fewer shapes)
    compile: bool = False
    # Evaluation, logging and checkpoints.
    eval_every: int = 0  # steps between STS dev evaluations (0 = only at the end)
    keep_best: bool = True  # with eval_sts: the saved model is the best dev checkpoint
    log_every: int = 10
    save_every: int = 0  # steps between resumable checkpoints (0 = none)
    keep_checkpoints: int = 2
    report_to: str = "none"  # experiment tracking: none, tensorboard (<output>/tensorboard/) or wandb


@dataclass
class SuiteConfig:
    """The paper-table STS suite (STS12-16, STSb test, SICK-R test) run once after training
    (``train --eval-suite [ROOT]``) and by ``evaluate/compare --suite sts``; see sbert_nli.sts_suite.

    With no path at all every set comes from its hub copy; once any path is given, the sets
    without one (and not found under ``root``) are reported as not evaluated. A path may also be
    "hub" (that set from the hub) or "none" (leave that set out)."""

    enabled: bool = False
    root: str | None = None  # one folder holding the sets (sts-senteval/, stsbenchmark/, SICK file)
    senteval_dir: str | None = None  # SentEval layout: STS12-en-test/ ... STS16-en-test/
    stsb: str | None = None  # STS benchmark test file (sts-test.csv)
    sick: str | None = None  # SICK.txt or SICK_test_annotated.txt
    aggregation: str = "all"  # STS12-16 sub-files: all (SBERT paper, SimCSE), mean or wmean (SentEval)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_suite: SuiteConfig = field(default_factory=SuiteConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "eval_suite": SuiteConfig}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise SbertNliError(
            f"unknown preset '{name}': choose one of {', '.join(list_presets())} or pass --config FILE"
        )
    return path


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SbertNliError(f"config file {path} does not exist (or is not a file)")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SbertNliError(f"config file {path} is not valid TOML: {exc}") from None
    _resolve_relative_paths(data, path.parent)
    return data


def _resolve_relative_paths(data: dict, base: Path) -> None:
    """Paths in a config file are relative to that file, not to the working directory."""

    def fix(value: str) -> str:
        from sbert_nli.data.shapes import is_hub_source

        if not isinstance(value, str) or value.startswith(("builtin:", "stsb:")) or value in HUB_DATA_NAMES \
                or is_hub_source(value, base):
            return value
        return str(base / value)  # absolute paths stay absolute: Path("/a") joined on base is "/a"

    data_section = data.get("data", {})
    if isinstance(data_section, dict):
        if isinstance(data_section.get("train"), list):
            data_section["train"] = [fix(v) for v in data_section["train"]]
        for key in ("eval_sts", "eval_nli"):
            if isinstance(data_section.get(key), str):
                data_section[key] = fix(data_section[key])
    suite_section = data.get("eval_suite", {})
    if isinstance(suite_section, dict):
        for key in ("root", "senteval_dir", "stsb", "sick"):
            if isinstance(suite_section.get(key), str) and suite_section[key] not in ("hub", "none", "stsb"):
                suite_section[key] = fix(suite_section[key])
    model_section = data.get("model", {})
    if isinstance(model_section, dict) and isinstance(model_section.get("name"), str):
        name = model_section["name"]
        if name.startswith(("./", "../")) or (base / name).is_dir():
            model_section["name"] = str(base / name)


def merge(config: RunConfig, overrides: dict, origin: str) -> RunConfig:
    """Apply ``{section: {key: value}}`` onto ``config`` with type checks and key suggestions."""
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise SbertNliError(f"{origin}: unknown section [{section}]{_suggest(section, SECTIONS)}")
        if not isinstance(values, dict):
            raise SbertNliError(f"{origin}: [{section}] must be a table of key = value")
        target = getattr(config, section)
        hints = typing.get_type_hints(type(target))
        for key, value in values.items():
            if key not in hints:
                raise SbertNliError(
                    f"{origin}: unknown key '{section}.{key}'{_suggest(key, hints)}"
                )
            setattr(target, key, _coerce(value, hints[key], f"{origin}: {section}.{key}"))
    return config


# Names users bring from the Hugging Face / sentence-transformers trainers.
ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs",
           "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
           "warmup_steps": "warmup_ratio", "gradient_accumulation_steps": "grad_accum",
           "max_length": "max_seq_length", "fp16": "precision", "bf16": "precision", "model_name": "name"}


def _suggest(word: str, options) -> str:
    if ALIASES.get(word) in options:
        return f" (did you mean '{ALIASES[word]}'?)"
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(options)})"


def _coerce(value, hint, where: str):
    """Check ``value`` against a field's type; strings from the command line are parsed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise SbertNliError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise SbertNliError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise SbertNliError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise SbertNliError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SbertNliError(f"{where} must be a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise SbertNliError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = parse_mapping(value, where)
        if not isinstance(value, dict):
            raise SbertNliError(f"{where} must be a table of key = value, got {value!r}")
        return {str(k): _coerce(v, args[1], where) for k, v in value.items()}
    raise TypeError(f"unsupported config type {hint}")  # a bug in this module, not user input


def parse_mapping(text: str, where: str = "--columns") -> dict[str, str]:
    """Parse ``a=b,c=d`` into a dict."""
    mapping = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise SbertNliError(f"{where}: expected ROLE=COLUMN pairs separated by commas, got {part!r}")
        key, value = part.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


def validate(config: RunConfig) -> RunConfig:
    """Range checks that types cannot express; raise one actionable error for the first problem."""
    m, d, t = config.model, config.data, config.train

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise SbertNliError(message)

    check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    check(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
    check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    check(t.max_steps >= 0, f"train.max_steps must be >= 0, got {t.max_steps}")
    check(0.0 <= t.warmup_ratio <= 1.0, f"train.warmup_ratio must be within [0, 1], got {t.warmup_ratio}")
    check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    check(t.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (0 = no clipping), got {t.max_grad_norm}")
    check(t.mnr_scale > 0, f"train.mnr_scale must be > 0, got {t.mnr_scale}")
    # MNR's negatives are the other pairs of a micro-batch (batch_size per device): one pair has none
    # but its hard negative, and a pair without one then trains at loss exactly 0.
    check(t.loss != "mnr" or t.batch_size >= 2 or t.mnr_gather_across_ranks,
          "train.batch_size 1 gives the MNR loss no in-batch negatives (a pair without a hard negative trains at "
          "loss 0); use --batch-size 2 or more")
    check(t.eval_every >= 0 and t.save_every >= 0 and t.log_every >= 1,
          "train.eval_every and train.save_every must be >= 0 and train.log_every >= 1")
    check(t.split_padding_cost >= 0, f"train.split_padding_cost must be >= 0, got {t.split_padding_cost}")
    check(t.pad_to_multiple_of >= 0, f"train.pad_to_multiple_of must be >= 0, got {t.pad_to_multiple_of}")
    check(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    check(t.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    check(t.loss in LOSSES, f"train.loss must be one of {', '.join(LOSSES)}, got {t.loss!r}")
    check(t.report_to in REPORT_TO, f"train.report_to must be one of {', '.join(REPORT_TO)}, got {t.report_to!r}")
    check(t.report_to == "none" or _installed(t.report_to),
          f"--report-to {t.report_to} needs the {t.report_to} package: pip install {t.report_to}")
    check(t.engine in ENGINES, f"train.engine must be one of {', '.join(ENGINES)}, got {t.engine!r}")
    check(t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps"),
          f"train.device must be auto, cpu, cuda[:N] or mps, got {t.device!r}")
    bad = [f for f in t.head_features if f not in HEAD_FEATURES]
    check(not bad and t.head_features,
          f"train.head_features must be a non-empty subset of {', '.join(HEAD_FEATURES)}, got {t.head_features}")
    check(m.pooling is None or m.pooling in POOLING_MODES,
          f"model.pooling must be one of {', '.join(POOLING_MODES)}, got {m.pooling!r}")
    check(m.dropout is None or 0.0 <= m.dropout < 1.0, f"model.dropout must be within [0, 1), got {m.dropout}")
    check(m.max_seq_length >= 2, f"model.max_seq_length must be >= 2, got {m.max_seq_length}")
    check(d.quoting in ("auto", "csv", "none"), f"data.quoting must be auto, csv or none, got {d.quoting!r}")
    check(0.0 <= d.holdout_fraction < 1.0, f"data.holdout_fraction must be within [0, 1), got {d.holdout_fraction}")
    check(d.synthetic_pairs >= 30, f"data.synthetic_pairs must be >= 30, got {d.synthetic_pairs}")
    check(d.max_train_pairs >= 0, f"data.max_train_pairs must be >= 0, got {d.max_train_pairs}")
    check(bool(d.train), "data.train is empty: pass --train FILE [FILE ...] or a hub name (snli, mnli)")
    check(config.eval_suite.aggregation in SUITE_AGGREGATIONS,
          f"eval_suite.aggregation must be one of {', '.join(SUITE_AGGREGATIONS)}, got {config.eval_suite.aggregation!r}")
    from sbert_nli.data.shapes import SHAPES, check_loss_shape

    roles = list(dict.fromkeys(r for shape_roles in SHAPES.values() for r in shape_roles))
    unknown = set(d.columns) - set(roles)
    check(not unknown, f"--columns: unknown role(s) {sorted(unknown)}; roles are {', '.join(roles)}")
    check(d.shape == "auto" or d.shape in SHAPES, f"data.shape must be auto or one of {', '.join(SHAPES)}, got {d.shape!r}")
    check(not d.score_range or (len(d.score_range) == 2 and d.score_range[0] < d.score_range[1]),
          f"data.score_range must be [low, high] with low < high (or empty: detect), got {d.score_range}")
    check(t.cosent_scale > 0, f"train.cosent_scale must be > 0, got {t.cosent_scale}")
    if d.shape != "auto":
        check_loss_shape(t.loss, d.shape, f"data.shape {d.shape}")
    return config


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def resolve(preset: str | None, config_file: str | None, overrides: dict) -> RunConfig:
    config = RunConfig()
    if preset:
        merge(config, read_toml(preset_path(preset)), f"preset {preset}")
    if config_file:
        merge(config, read_toml(config_file), f"config {config_file}")
    merge(config, overrides, "command line")
    return validate(config)


def to_toml(data: dict) -> str:
    """Write the resolved config as TOML (None values are omitted: TOML has no null)."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def from_dict(data: dict) -> RunConfig:
    return validate(merge(RunConfig(), data, "saved config"))
