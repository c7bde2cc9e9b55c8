"""The SBERT paper's STS table in one call: STS12-16, STS benchmark test, SICK-R test, and their average.

Reimers & Gurevych (2019), Table 1, report Spearman x100 of the cosine similarity of the two
sentence embeddings against the gold scores, in the column order STS12 STS13 STS14 STS15 STS16
STSb SICK-R Avg (Avg = plain mean of the seven). STS12-16 come split into 3-6 sub-files each, and
the literature aggregates them in three ways (names as SentEval and SimCSE use them):

- ``mean``: the correlation of each sub-file, averaged (SentEval ``senteval/sts.py``,
  ``STSEval.run``: ``np.average(list_spr)``);
- ``wmean``: the same, weighted by each sub-file's pair count (SentEval: ``np.average(list_spr,
  weights=nsamples)``);
- ``all``: every sub-file of a year concatenated, one correlation (SimCSE's SentEval fork,
  ``results['all']['spearman']['all']``).

The default is ``all`` because that is what the SBERT paper's Table 1 used: Gao, Yao & Chen (2021),
"SimCSE", Appendix B ("Different settings for STS evaluation", Table B.2) reproduce SBERT's
reported numbers and "find that Reimers and Gurevych (2019) take the 'all' setting"; SimCSE's
README says its evaluation "takes the 'all' setting". STSb and SICK-R are single sets, so the three
aggregations agree there. Every similarity we support (cosine, euclidean, manhattan, dot) is scored
with Pearson and Spearman, as ``sbert_nli.evaluate.sts_metrics`` does for one file.

A set that is not evaluated (no file given, or ``"none"``) is reported as such, and the seven-set
``Avg`` is then ``None`` (n/a): a mean over fewer sets is not comparable to the paper's, so it is
reported separately as ``avg_evaluated`` with the sets it covers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sbert_nli.config import SUITE_AGGREGATIONS, SuiteConfig
from sbert_nli.data.senteval import SENTEVAL_SUBSETS, SuiteSet, find_sick, load_hub_set, read_senteval_year, read_sick
from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")

SUITE_SETS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSb", "SICK-R")  # the paper's column order
YEARS = tuple(SENTEVAL_SUBSETS)
AGGREGATIONS = SUITE_AGGREGATIONS
DEFAULT_AGGREGATION = "all"
AGGREGATION_SOURCE = ("SBERT paper Table 1 = 'all' (SimCSE paper, Appendix B, Table B.2)")
HEADLINE = "cosine_spearman"


# --------------------------------------------------------------------------- where each set comes from
def _first_existing(candidates) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def _under_root(root: Path) -> dict[str, Path | None]:
    """Find the sets under one folder: ours (sts-senteval/, stsbenchmark/) or SentEval's downstream/."""
    if not root.is_dir():
        raise SbertNliError(f"STS suite root {root} is not a folder (--sts-root / --eval-suite DIR)")
    bases = [root, root / "downstream", root / "data" / "downstream"]
    senteval = _first_existing(b / d for b in bases for d in ("", "sts-senteval", "STS")
                               if (b / d / "STS12-en-test").is_dir())
    stsb = _first_existing(b / d / "sts-test.csv" for b in bases
                           for d in ("", "stsbenchmark", "STSBenchmark", "STS/STSBenchmark"))
    sick = next((s for s in (find_sick(b) for b in bases) if s is not None), None)
    return {"senteval": senteval, "stsb": stsb, "sick": sick}


def plan_sources(cfg: SuiteConfig) -> dict[str, tuple[str, str | None]]:
    """For each set: ``(kind, value)`` with kind ``senteval`` / ``file`` / ``hub`` / ``missing``.

    No path anywhere: every set from the hub. Otherwise explicit options win over what ``root``
    holds, ``"hub"`` picks the hub copy, and a set with no source is ``missing`` (with the reason).
    Only checks that paths exist; reading happens in :func:`load_suite`.
    """
    if not any((cfg.root, cfg.senteval_dir, cfg.stsb, cfg.sick)):
        return {name: ("hub", None) for name in SUITE_SETS}
    found = _under_root(Path(cfg.root)) if cfg.root else {"senteval": None, "stsb": None, "sick": None}
    where = f" under {cfg.root}" if cfg.root else ""

    def pick(option: str | None, key: str, flag: str, what: str) -> tuple[str, str | None]:
        if option == "hub":
            return ("hub", None)
        if option == "none":
            return ("missing", f"left out ({flag.split()[0]} none)")
        value = option or (str(found[key]) if found[key] else None)
        if value is None:
            return ("missing", f"no {what}{where}; pass {flag}")
        if not Path(value).exists():
            raise SbertNliError(f"{flag.split()[0]} {value} does not exist")
        return ("senteval" if key == "senteval" else "file", value)

    senteval = pick(cfg.senteval_dir, "senteval", "--senteval-dir DIR", "SentEval STS folder (STS12-en-test ...)")
    plan = {year: senteval for year in YEARS}
    plan["STSb"] = ("hub", None) if cfg.stsb in ("hub", "stsb") else pick(cfg.stsb, "stsb", "--stsb FILE", "sts-test.csv")
    plan["SICK-R"] = pick(cfg.sick, "sick", "--sick FILE", "SICK_test_annotated.txt or SICK.txt")
    return plan


def _load_one(name: str, kind: str, value: str | None) -> SuiteSet:
    from sbert_nli.data.sts import read_sts

    if kind == "hub":
        if name == "STSb":
            data = read_sts("stsb")
            return SuiteSet("STSb", f"sentence-transformers/stsb (hub, test split, {len(data)} pairs)", [data])
        return load_hub_set(name)
    if kind == "senteval":
        return read_senteval_year(value, name)
    if name == "SICK-R":
        return read_sick(value)
    data = read_sts(value)
    return SuiteSet("STSb", f"{value} ({len(data)} pairs)", [data])


def load_suite(cfg: SuiteConfig, sets=SUITE_SETS) -> tuple[dict[str, SuiteSet], dict[str, str]]:
    """Read the sets named in ``sets``; returns ``(loaded by name, reason by name for the others)``."""
    plan = plan_sources(cfg)
    loaded, missing = {}, {}
    for name in sets:
        kind, value = plan[name]
        if kind == "missing":
            missing[name] = value
        else:
            loaded[name] = _load_one(name, kind, value)
    if not loaded:
        raise SbertNliError("no STS suite set to evaluate: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    return loaded, missing


# --------------------------------------------------------------------------- scores
def _mean(values: list, weights: list | None = None) -> float | None:
    """Plain or weighted mean; None when any value is undefined (None or NaN)."""
    if not values or any(v is None or v != v for v in values):
        return None
    return float(np.average(np.asarray(values, dtype=np.float64), weights=weights))


def aggregate(per_subset: dict[str, dict], all_metrics: dict) -> dict[str, dict]:
    """``{aggregation: {metric: value}}`` from per-subset metrics (each with ``pairs``) and the
    metrics of all sub-files concatenated. Formulas: SentEval ``STSEval.run`` (mean, wmean) and
    SimCSE's fork of it (all); see the module docstring."""
    metrics = [k for k in all_metrics if k != "pairs"]
    weights = [m["pairs"] for m in per_subset.values()]
    return {
        "all": {k: all_metrics[k] for k in metrics},
        "mean": {k: _mean([m[k] for m in per_subset.values()]) for k in metrics},
        "wmean": {k: _mean([m[k] for m in per_subset.values()], weights) for k in metrics},
    }


def score_sets(embed, sets: dict[str, SuiteSet]) -> dict[str, dict]:
    """Per set: source, pairs, per-subset metrics and the three aggregations.

    ``embed(texts) -> float32 [N, D]`` is called once for every sentence of every set (the
    encoder encodes each distinct sentence once). Metrics are ``sts_metrics``' (x100)."""
    from sbert_nli.evaluate import sts_metrics

    texts = [t for s in sets.values() for d in s.subsets for t in (*d.sentence1, *d.sentence2)]
    emb = embed(texts)
    out, start = {}, 0
    for name, suite_set in sets.items():
        per_subset, parts = {}, []
        for data in suite_set.subsets:
            n = len(data)
            e1, e2 = emb[start:start + n], emb[start + n:start + 2 * n]
            start += 2 * n
            per_subset[data.name] = {**sts_metrics(e1, e2, data.score), "pairs": n}
            parts.append((e1, e2, data.score))
        all_metrics = sts_metrics(*(np.concatenate(p) for p in zip(*parts)))
        aggregations = aggregate(per_subset, all_metrics)
        if not suite_set.has_subfiles:  # a hub year: the sub-files are unknown, mean/wmean undefined
            aggregations["mean"] = aggregations["wmean"] = {k: None for k in aggregations["all"]}
        out[name] = {"source": suite_set.source, "pairs": suite_set.pairs, "aggregations": aggregations,
                     "subsets": per_subset}
    return out


def summarise(per_set: dict[str, dict], missing: dict[str, str], aggregation: str) -> dict:
    """The suite result: headline scores by paper name (``Avg`` over all seven, else None), averages
    per aggregation, and what was not evaluated."""
    if aggregation not in AGGREGATIONS:
        raise SbertNliError(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    complete = all(name in per_set for name in SUITE_SETS)
    metrics = list(next(iter(per_set.values()))["aggregations"]["all"])
    averages = {agg: {k: (_mean([s["aggregations"][agg][k] for s in per_set.values()]) if complete else None)
                      for k in metrics} for agg in AGGREGATIONS}
    scores = {name: (per_set[name]["aggregations"][aggregation][HEADLINE] if name in per_set else None)
              for name in SUITE_SETS}
    scores["Avg"] = averages[aggregation][HEADLINE]
    result = {"suite": "sts", "aggregation": aggregation, "aggregation_note": AGGREGATION_SOURCE,
              "headline": f"{HEADLINE} x100", "scores": scores, "averages": averages, "sets": per_set,
              "not_evaluated": {name: missing.get(name, "not requested") for name in SUITE_SETS if name not in per_set}}
    if not complete:
        evaluated = [name for name in SUITE_SETS if name in per_set]
        result["avg_evaluated"] = {"sets": evaluated, HEADLINE: _mean([scores[n] for n in evaluated])}
    return result


def score_suite(encoder, loaded: dict[str, SuiteSet], missing: dict[str, str], aggregation: str = DEFAULT_AGGREGATION,
                device=None, precision: str = "fp32", batch_size: int = 64, progress: bool = False) -> dict:
    """Score already-read sets with one encoder (``compare`` reads once, scores each model)."""

    def embed(texts):
        return encoder.encode(texts, batch_size=batch_size, device=device, precision=precision, progress=progress)

    return summarise(score_sets(embed, loaded), missing, aggregation)


def run_suite(encoder, suite_config: SuiteConfig, device=None, precision: str = "fp32", batch_size: int = 64,
              progress: bool = False, sets=SUITE_SETS) -> dict:
    """Read the suite's sets (``suite_config``), encode every sentence once, return :func:`summarise`'s dict.

    ``encoder``: anything with ``encode(texts, batch_size=, device=, precision=, progress=) ->
    float32 [N, D]`` (:class:`sbert_nli.model.SentenceEncoder`). Raises SbertNliError for unreadable
    data or when no set can be read; sets without a source are listed under ``not_evaluated``
    (and logged as a warning). This is what ``train --eval-suite`` calls after training.
    """
    loaded, missing = load_suite(suite_config, sets)
    for name, reason in missing.items():
        log.warning("%s not evaluated: %s", name, reason)
    return score_suite(encoder, loaded, missing, suite_config.aggregation, device, precision, batch_size, progress)
