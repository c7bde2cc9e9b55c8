"""The Python API: train, load, predict, evaluate, read data and draw figures from a notebook or a script.

Every function here is what a CLI command runs (the CLI calls these), so the two give the same
numbers and the same errors: :class:`~sbert_nli.errors.SbertNliError`, whose message is the CLI's
one-line ``error: ...``. Heavy libraries load on first use, not on ``import sbert_nli``.

Example::

    import sbert_nli
    results = sbert_nli.train(output="runs/x", preset="smoke", train=dataset, max_steps=8, precision="fp32", seed=9)
    model = sbert_nli.load("runs/x")
    model.encode(["A man plays a guitar."])                         # float32 numpy [1, D]
    model.predict("A man plays a guitar.", "Someone makes music.")   # {"label": ..., "probabilities": {...}}
"""

from __future__ import annotations

import typing
from pathlib import Path

from sbert_nli.errors import SbertNliError


# --------------------------------------------------------------------------- training
def train(output: str | Path, *, preset: str | None = None, config=None, config_file: str | Path | None = None,
          train=None, model: str | None = None, overwrite: bool = False, resume: bool | str = False,
          progress: bool = True, **overrides) -> dict:
    """Train a sentence encoder on NLI pairs and save it (with its NLI head) into ``output``.

    Settings resolve as the CLI's, later wins: defaults (SBERT paper) < ``preset`` (smoke, sbert-paper,
    mnr, ...) < ``config_file`` (TOML) < ``config`` (a ``RunConfig`` is the base instead of the
    defaults; a ``{section: {key: value}}`` dict is merged here) < ``model``, ``train`` and keyword
    overrides. An override uses the TOML key name: flat (``lr=1e-5``, ``max_steps=8``,
    ``precision="fp32"``, ``eval_sts="sts-dev.csv"``) when the name is in one section only, else
    ``section__key`` (``train__seed=9``); an unknown or ambiguous name raises with a suggestion.

    ``train`` is the training data: file paths or hub names (as ``--train``), or data in memory —
    a ``datasets.Dataset`` (e.g. the seed's merged SNLI+MNLI set: premise/hypothesis/label with
    0 entailment, 1 neutral, 2 contradiction, -1 dropped), a pandas DataFrame, a dict of columns,
    a list of dicts or of (premise, hypothesis, label) tuples. In-memory data goes through the same
    checks, drops and counts as a file (``columns=`` maps other column names); the saved config
    records it as ``in-memory:<type>``.

    Returns the results dict (steps, pairs_per_s, wall_s, dev_spearman / heldout_accuracy when
    evaluated, ...), also saved as ``output/results.json``. Raises ``SbertNliError`` for bad settings
    or data. Global random states, signal handlers and thread settings are as before when it returns.
    """
    from sbert_nli.config import RunConfig, merge, preset_path, read_toml, validate

    base = config if isinstance(config, RunConfig) else RunConfig()
    resolved = merge(RunConfig(), base.to_dict(), "config")  # a copy: the caller's object stays as given
    if preset:
        merge(resolved, read_toml(preset_path(preset)), f"preset {preset}")
    if config_file:
        merge(resolved, read_toml(config_file), f"config {config_file}")
    if isinstance(config, dict):
        merge(resolved, config, "config")
    pairs = None
    if train is not None:
        if _is_sources(train):
            overrides["data__train"] = [str(s) for s in ([train] if isinstance(train, (str, Path)) else train)]
        else:
            pairs = load_nli(train, columns=overrides.get("columns") or overrides.get("data__columns"))
            overrides["data__train"] = [s.name for s in pairs.sources] or ["in-memory:NLIData"]
    if model is not None:
        overrides["model__name"] = model
    merge(resolved, config_overrides(overrides), "sbert_nli.train()")
    return run_training(validate(resolved), output, overwrite=overwrite, resume=resume, progress=progress, pairs=pairs)


def run_training(config, output: str | Path, overwrite: bool = False, resume: bool | str = False,
                 progress: bool = True, pairs=None) -> dict:
    """Run the configured engine on a resolved ``RunConfig`` (what ``sbert-nli train`` runs), leaving
    the process's random states, thread count and signal handlers as it found them. ``pairs``
    (``NLIData``) replaces ``config.data.train`` when the data came from memory."""
    data = {} if pairs is None else {"pairs": pairs}
    with _process_state_kept():
        if config.train.engine == "sentence-transformers":
            from sbert_nli.engines.st import train_st

            return train_st(config, output, overwrite=overwrite, progress=progress, resume=resume, **data)
        from sbert_nli.train import train as train_native

        return train_native(config, output, overwrite=overwrite, resume=resume, progress=progress, **data)


def config_overrides(kwargs: dict) -> dict:
    """``{section: {key: value}}`` from keyword overrides named ``key``, ``section__key`` or ``section.key``."""
    from sbert_nli.config import SECTIONS, _suggest

    fields = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}
    out: dict = {}
    for name, value in kwargs.items():
        for sep in ("__", "."):
            if sep in name:
                section, key = name.split(sep, 1)
                break
        else:
            owners = [s for s, keys in fields.items() if name in keys]
            if len(owners) > 1:
                raise SbertNliError(f"'{name}' is a key of {' and '.join(f'[{s}]' for s in owners)}; "
                                    f"pass {' or '.join(f'{s}__{name}=' for s in owners)}")
            if not owners:
                every = [k for keys in fields.values() for k in keys]
                raise SbertNliError(f"sbert_nli.train(): unknown option '{name}'{_suggest(name, every)}")
            section, key = owners[0], name
        out.setdefault(section, {})[key] = value
    return out


def _is_sources(train) -> bool:
    if isinstance(train, (str, Path)):
        return True
    return isinstance(train, (list, tuple)) and bool(train) and all(isinstance(s, (str, Path)) for s in train)


class _process_state_kept:
    """Restore what a training run changes process-wide: the random generators (Python, NumPy, torch
    CPU and initialised CUDA devices, seeded by both engines), torch's thread count, the SIGINT/SIGTERM
    handlers."""

    def __enter__(self):
        import random
        import signal

        import numpy as np
        import torch

        self.python, self.numpy = random.getstate(), np.random.get_state()
        self.torch = torch.random.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.threads = torch.get_num_threads()
        self.signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        import random
        import signal
        import threading

        import numpy as np
        import torch

        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.random.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        torch.set_num_threads(self.threads)
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self.signals.items():
                if handler is not None and signal.getsignal(sig) is not handler:
                    signal.signal(sig, handler)


# --------------------------------------------------------------------------- using a model
class Encoder:
    """A trained (or any sentence-transformers / Hugging Face) model ready to use; from :func:`load`.

    Attributes: ``encoder`` (the ``SentenceEncoder`` module), ``head`` (the trained ``SoftmaxLoss``
    head or None), ``dim`` (embedding size D), ``device``, ``precision``, ``path``."""

    def __init__(self, encoder, head, path: str, device, precision: str, batch_size: int):
        self.encoder, self.head, self.path = encoder, head, path
        self.device, self.precision, self.batch_size = device, precision, batch_size

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def __repr__(self) -> str:
        return (f"Encoder({self.path!r}, dim={self.dim}, pooling={self.encoder.pooling}, "
                f"nli_head={'yes' if self.head is not None else 'no'}, device={self.device}, precision={self.precision})")

    def encode(self, sentences: str | list[str], batch_size: int | None = None, progress: bool = False):
        """Sentence embeddings: float32 numpy [N, D] (a single string gives [1, D]), in input order; the
        same numbers as ``SentenceTransformer(path).encode(sentences)`` (fp32)."""
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        return self.encoder.encode(texts, batch_size=batch_size or self.batch_size, device=self.device,
                                   precision=self.precision, progress=progress)

    def similarity(self, sentences: list[str]):
        """Cosine similarity matrix, float64 numpy [N, N] (exactly symmetric, 1 on the diagonal)."""
        from sbert_nli.report import cosine_matrix

        return cosine_matrix(self.encode(sentences))

    def _require_head(self) -> None:
        if self.head is None:  # the loader's own error, as the CLI gives it
            from sbert_nli.losses import SoftmaxLoss

            SoftmaxLoss.load(Path(self.path) / "nli_head")

    def predict(self, premise: str | list[str], hypothesis: str | list[str]):
        """NLI prediction with the trained head (``nli_head/``, softmax loss): for one pair
        ``{"label": "entailment" | "neutral" | "contradiction", "probabilities": {label: p}}`` (the
        output of ``sbert-nli predict --json``); for two equally long lists, a list of those.
        Raises ``SbertNliError`` when the folder has no head or the lists differ in length."""
        from sbert_nli.evaluate import predict_nli
        from sbert_nli.losses import LABELS

        self._require_head()
        single = isinstance(premise, str) and isinstance(hypothesis, str)
        premises, hypotheses = ([premise], [hypothesis]) if single else (list(premise), list(hypothesis))
        if len(premises) != len(hypotheses):
            raise SbertNliError(f"predict: {len(premises)} premise(s) but {len(hypotheses)} hypothesis(es)")
        probs = predict_nli(self.encoder, self.head, premises, hypotheses, self.batch_size, self.device, self.precision)
        out = [{"label": LABELS[int(p.argmax())], "probabilities": dict(zip(LABELS, map(float, p)))} for p in probs]
        return out[0] if single else out


def load(path: str | Path, device: str = "auto", precision: str = "fp32", batch_size: int = 64,
         pooling: str | None = None, max_seq_length: int | None = None, trust_remote_code: bool = False) -> Encoder:
    """Load a model folder (ours, any sentence-transformers model, a plain Hugging Face model) or hub
    id into an :class:`Encoder`; its NLI head too when the folder has ``nli_head/``.

    ``device``: auto (cuda > mps > cpu), cpu, cuda[:N], mps. ``precision``: fp32 (default), bf16,
    fp16 or auto. Raises ``SbertNliError`` for a missing or unreadable model."""
    from sbert_nli.losses import SoftmaxLoss
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.precision import resolve_device, resolve_precision

    resolved = resolve_device(device)
    encoder = SentenceEncoder.load(str(path), pooling, max_seq_length, trust_remote_code).to(resolved)
    head = SoftmaxLoss.load(Path(path) / "nli_head").to(resolved) if (Path(path) / "nli_head").is_dir() else None
    return Encoder(encoder, head, str(path), resolved, resolve_precision(precision, resolved), batch_size)


def _as_encoder(model) -> Encoder:
    return model if isinstance(model, Encoder) else load(model)


# --------------------------------------------------------------------------- data and evaluation
def load_nli(source, columns: dict[str, str] | str | None = None):
    """NLI pairs as ``NLIData`` (premise, hypothesis: lists of str; label: int64 numpy [N], 0 entailment,
    1 neutral, 2 contradiction; per-source drop counts in ``.sources``). ``source``: a file, a hub name
    (snli, mnli), a list of those, or data in memory (see :func:`train`). Rows without a gold label
    (-1, "-") are dropped and counted; anything else malformed raises ``SbertNliError``."""
    from sbert_nli.config import parse_mapping
    from sbert_nli.data.nli import NLIData, load_nli as load_sources, nli_from_memory

    columns = parse_mapping(columns) if isinstance(columns, str) else columns
    if isinstance(source, NLIData):
        return source
    if _is_sources(source):
        return load_sources([str(s) for s in ([source] if isinstance(source, (str, Path)) else source)], columns)
    return nli_from_memory(source, columns)


def load_sts(source, columns: dict[str, str] | str | None = None):
    """STS pairs as ``STSData`` (sentence1, sentence2: lists of str; score: float64 numpy [N]) from the STS
    benchmark files (sts-dev.csv, ...), any table with sentence1/sentence2/score, ``stsb`` /
    ``stsb:validation`` from the hub, or data in memory (Dataset, DataFrame, dict of columns, rows)."""
    from sbert_nli.config import parse_mapping
    from sbert_nli.data.sts import STSData, read_sts, sts_from_memory

    columns = parse_mapping(columns) if isinstance(columns, str) else columns
    if isinstance(source, STSData):
        return source
    return read_sts(str(source), columns) if isinstance(source, (str, Path)) else sts_from_memory(source, columns)


def evaluate(model, sts=(), nli=(), columns: dict[str, str] | str | None = None, batch_size: int = 64,
             progress: bool = False) -> dict:
    """STS correlations and NLI accuracy, as ``sbert-nli evaluate``: ``{"model", "sts": {name: metrics},
    "nli": {name: metrics}}``. STS metrics are Pearson/Spearman x100 for cosine, euclidean, manhattan and
    dot (``cosine_spearman`` is the SBERT paper's number); NLI metrics are accuracy, macro_f1 (fractions),
    per-class scores and the confusion matrix (rows gold). ``model``: an :class:`Encoder` or a path;
    ``sts`` / ``nli``: one source or a list (anything :func:`load_sts` / :func:`load_nli` reads)."""
    from sbert_nli.config import parse_mapping
    from sbert_nli.evaluate import evaluate_nli, evaluate_sts

    encoder = _as_encoder(model)
    mapping = parse_mapping(columns) if isinstance(columns, str) else dict(columns or {})
    sts_cols = {k: v for k, v in mapping.items() if k in ("sentence1", "sentence2", "score")}
    nli_cols = {k: v for k, v in mapping.items() if k in ("premise", "hypothesis", "label")}
    sts_sets = [load_sts(s, sts_cols) for s in _as_list(sts)]
    nli_sets = [load_nli(n, nli_cols) for n in _as_list(nli)]
    result: dict = {"model": encoder.path, "sts": {}, "nli": {}}
    for data in sts_sets:
        result["sts"][data.name] = evaluate_sts(encoder.encoder, data, batch_size, encoder.device, encoder.precision,
                                                progress=progress)
    if nli_sets:
        encoder._require_head()
    for data in nli_sets:
        name = data.sources[0].name if data.sources else "nli"
        result["nli"][name] = evaluate_nli(encoder.encoder, encoder.head, data, batch_size, encoder.device,
                                           encoder.precision)
    return result


def _as_list(value) -> list:
    """Several sources (a list of paths / loaded sets) or one (a path, a loaded set, data in memory)."""
    from sbert_nli.data.nli import NLIData
    from sbert_nli.data.sts import STSData

    if value is None or (isinstance(value, (list, tuple)) and not value):
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path, STSData, NLIData)) for v in value):
        return list(value)
    return [value]


# --------------------------------------------------------------------------- figures
def plot_similarity(models, sentences: list[str] | None = None, path: str | Path | None = None):
    """Cosine-similarity heatmaps of ``sentences`` (default: built-in paraphrase pairs and distractors),
    one panel per model on a shared colour scale, as the walk-through compares models. ``models``: one
    model, a list, or ``{title: model}`` (models are :class:`Encoder` s or paths). Returns the
    ``matplotlib.figure.Figure`` (a notebook shows it inline); also written as PNG to ``path`` if given."""
    from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, heatmap_figure

    sentences = list(sentences or EXAMPLE_SENTENCES)
    if isinstance(models, dict):
        named = list(models.items())
    else:
        named = [(m.path if isinstance(m, Encoder) else str(m), m) for m in
                 (models if isinstance(models, (list, tuple)) else [models])]
    panels = [(title, cosine_matrix(_as_encoder(m).encode(sentences))) for title, m in named]
    fig = heatmap_figure(panels, sentences)
    if path is not None:
        fig.savefig(path, dpi=fig.dpi)
    return fig


def plot_training(run: str | Path, path: str | Path | None = None):
    """Training loss and dev Spearman against the optimiser step from ``run/metrics.jsonl``; a Figure
    (also written to ``path`` if given). Raises ``SbertNliError`` when the run has no metrics."""
    from sbert_nli.report import read_metrics, training_curves_figure

    metrics = Path(run) / "metrics.jsonl"
    if not metrics.is_file():
        raise SbertNliError(f"{run} has no metrics.jsonl; is it the output folder of `sbert-nli train`?")
    fig = training_curves_figure(read_metrics(metrics))
    if fig is None:
        raise SbertNliError(f"{metrics} has no records yet")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
