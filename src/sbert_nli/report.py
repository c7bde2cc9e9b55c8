"""Pictures and documents: training curves, similarity heatmaps, compare tables, the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Built-in sentences for the qualitative check. The paraphrase pairs share no content words, so word
# overlap cannot explain a high score; the rest are unrelated distractors.
EXAMPLE_SENTENCES = [
    "The physician told me to stop smoking.",  # pair A
    "My doctor advised quitting cigarettes.",  # pair A
    "A kid is playing soccer on the lawn.",  # pair B
    "Children kick a ball around outside.",  # pair B
    "The stock market crashed yesterday.",  # pair C
    "Share prices fell sharply on Monday.",  # pair C
    "She is cooking pasta for dinner.",  # pair D
    "Someone prepares an Italian meal tonight.",  # pair D
    "Penguins live in the Antarctic.",  # distractor
    "This laptop needs a new battery.",  # distractor
]
HEATMAP_DPI = 100


def cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    e = embeddings.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    sim = (sim + sim.T) / 2  # exact symmetry despite float rounding
    np.fill_diagonal(sim, 1.0)
    return sim


def top_pairs(sim: np.ndarray, sentences: list[str], k: int = 5) -> list[tuple[float, str, str]]:
    i, j = np.triu_indices(len(sentences), k=1)
    order = np.argsort(-sim[i, j])[:k]
    return [(float(sim[i[o], j[o]]), sentences[i[o]], sentences[j[o]]) for o in order]


def model_label(name: str) -> str:
    """A short title for a model: a hub id as is, a local folder by its last two path parts."""
    from pathlib import Path

    parts = Path(name).parts
    if Path(name).exists() and len(parts) > 2:
        name = "/".join(parts[-2:])
    return _short(name, 40)


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _draw_heatmap(ax, sim: np.ndarray, labels: list[str], title: str, vmin: float, vmax: float, annotate: bool = True):
    image = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(labels)), [str(i) for i in range(len(labels))])
    ax.set_yticks(range(len(labels)), [f"{_short(s)} [{i}]" for i, s in enumerate(labels)], fontsize=7)
    ax.set_title(title, fontsize=9)
    if annotate and len(labels) <= 16:
        for r in range(len(labels)):
            for c in range(len(labels)):
                value = sim[r, c]
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > (vmin + vmax) / 2 else "white")
    return image


def heatmap_size(n_panels: int) -> tuple[float, float]:
    return (4.8 * n_panels + 2.2, 5.0)


def heatmap_figure(panels: list[tuple[str, np.ndarray]], sentences: list[str]):
    """One ``matplotlib.figure.Figure``, one heatmap per (title, [N, N] cosine matrix), on a shared colour
    scale. Built without pyplot, so it changes no backend and needs no ``close``; a notebook shows it inline."""
    from matplotlib.figure import Figure

    vmin = min(float(m.min()) for _, m in panels)
    vmax = 1.0
    fig = Figure(figsize=heatmap_size(len(panels)), dpi=HEATMAP_DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    image = None
    for ax, (title, sim) in zip(axes[0], panels):
        image = _draw_heatmap(ax, sim, sentences, model_label(title), vmin, vmax)
        if ax is not axes[0][0]:
            ax.set_yticks(range(len(sentences)), [str(i) for i in range(len(sentences))])
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="cosine similarity (shared scale)")
    return fig


def save_heatmaps(path: str | Path, panels: list[tuple[str, np.ndarray]], sentences: list[str]) -> tuple[int, int]:
    """:func:`heatmap_figure` written to ``path`` (PNG). Returns its size in pixels (width, height)."""
    fig = heatmap_figure(panels, sentences)
    fig.savefig(path, dpi=HEATMAP_DPI)
    return fig.canvas.get_width_height()


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(value) -> str:  # None: an undefined metric (e.g. a correlation of constant scores)
        return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def training_curves_figure(records: list[dict]):
    """Training loss (and STS dev Spearman x100 where evaluated) against the optimiser step, from
    ``metrics.jsonl`` records; a ``matplotlib.figure.Figure`` (no pyplot state), or None without records."""
    from matplotlib.figure import Figure

    if not records:
        return None
    dev = [r for r in records if "dev_spearman" in r]
    fig = Figure(figsize=(10 if dev else 5.5, 3.8), layout="tight")
    axes = fig.subplots(1, 2 if dev else 1, squeeze=False)
    logged = [r for r in records if "loss" in r]  # dev evaluations have records of their own
    axes[0][0].plot([r["step"] for r in logged], [r["loss"] for r in logged])
    axes[0][0].set_xlabel("optimiser step")
    axes[0][0].set_ylabel("training loss")
    axes[0][0].set_title("loss")
    if dev:
        axes[0][1].plot([r["step"] for r in dev], [r["dev_spearman"] for r in dev], marker="o")
        axes[0][1].set_xlabel("optimiser step")
        axes[0][1].set_ylabel("STS dev Spearman x100 (cosine)")
        axes[0][1].set_title("dev Spearman")
    return fig


def read_metrics(metrics_file: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (one dict per log step)."""
    return [json.loads(line) for line in Path(metrics_file).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_training_curves(metrics_file: Path, target: Path) -> bool:
    """Write :func:`training_curves_figure` of ``metrics_file`` to ``target``; False when there is nothing to draw."""
    fig = training_curves_figure(read_metrics(metrics_file))
    if fig is None:
        return False
    fig.savefig(target, dpi=100)
    return True


CITATION = """@inproceedings{reimers-2019-sentence-bert,
  title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
  author = "Reimers, Nils and Gurevych, Iryna",
  booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
  year = "2019",
  url = "https://arxiv.org/abs/1908.10084",
}"""


def write_training_report(out: Path, config, data, results: dict) -> None:
    """metrics plot + README.md model card in the output folder."""
    from sbert_nli.config import to_toml
    from sbert_nli.data.shapes import describe

    has_plot = plot_training_curves(out / "metrics.jsonl", out / "training_curves.png")
    m, t = config.model, config.train
    rows = [{"source": s.name, "rows": s.rows, "kept": s.kept, "dropped (no gold)": s.dropped_no_gold,
             "dropped (empty)": s.dropped_empty} for s in data.sources]
    if any(getattr(s, "note", "") for s in data.sources):  # e.g. how scores were normalised
        for row, source in zip(rows, data.sources):
            row["note"] = getattr(source, "note", "")
    metric_rows = []
    if "dev_spearman" in results:
        metric_rows.append({"metric": f"STS dev Spearman x100 (cosine) on {config.data.eval_sts}", "value": results["dev_spearman"]})
    if "heldout_accuracy" in results:
        metric_rows.append({"metric": f"held-out NLI accuracy ({results['heldout_nli']['pairs']} pairs)",
                            "value": results["heldout_accuracy"] * 100})
        metric_rows.append({"metric": "held-out NLI macro-F1", "value": results["heldout_nli"]["macro_f1"] * 100})
    loss_name = {
        "softmax": "softmax classification over (" + ", ".join(t.head_features) + ")",
        "mnr": f"Multiple Negatives Ranking (scale {t.mnr_scale}{', symmetric' if t.mnr_symmetric else ''})",
        "cosine": "cosine similarity regression (MSE against the 0-1 gold score, SBERT paper)",
        "cosent": f"CoSENT (scale {t.cosent_scale})"}[t.loss]
    card = f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, sentence-similarity, sbert-nli]
---
# Sentence encoder trained with sbert-nli

- **Base model:** `{m.name}` ({results.get('pooling', m.pooling or 'mean')} pooling, max_seq_length {results.get('max_seq_length', m.max_seq_length)})
- **Loss:** {loss_name}
- **Training data:** {describe(data)}; {results.get('examples', '')}
- **Steps:** {results.get('steps')} optimiser steps, batch {t.batch_size} x accumulation {t.grad_accum}, lr {t.lr}, warm-up {t.warmup_ratio:.0%}, precision {results.get('precision', t.precision)}, engine {results.get('engine', t.engine)}

## Data

{markdown_table(rows, list(rows[0])) if rows else '(none)'}

## Results

{markdown_table(metric_rows, ['metric', 'value']) if metric_rows else 'No evaluation data was given (pass --eval-sts / --eval-nli / holdout_fraction).'}

{suite_card_section(results['sts_suite']) if 'sts_suite' in results else ''}

{'![training curves](training_curves.png)' if has_plot else ''}

## Usage

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{out}")
embeddings = model.encode(["A man plays a guitar.", "Someone makes music."])
```

```bash
sbert-nli encode {out} --input sentences.txt --output embeddings.npy
sbert-nli predict {out} "A man plays a guitar." "Someone makes music."   # uses nli_head/ (softmax loss)
sbert-nli evaluate {out} --sts sts-test.csv
```

## Hyper-parameters (resolved config, also in `sbert_nli_config.toml`)

```toml
{to_toml(config.to_dict())}
```

## Citation

```bibtex
{CITATION}
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


# --------------------------------------------------------------------------- STS suite (sbert_nli.sts_suite)
def _cell(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def suite_table(results: list[dict], labels: list[str] | None = None) -> str:
    """Markdown table, one row per model: headline score (cosine Spearman x100) per set in the
    paper's column order, ``n/a`` for a set not evaluated (and for Avg unless all seven were)."""
    from sbert_nli.sts_suite import SUITE_SETS

    columns = ["model", *SUITE_SETS, "Avg"]
    labels = labels or [r.get("model", "") for r in results]
    rows = [{"model": model_label(label), **{k: _cell(r["scores"][k]) for k in columns[1:]}}
            for label, r in zip(labels, results)]
    return markdown_table(rows, columns)


def suite_details(result: dict) -> str:
    """Per similarity function (Spearman x100, this aggregation), every aggregation (cosine), the
    sub-files of each year, the sources read, and what was not evaluated."""
    from sbert_nli.evaluate import SIMILARITIES
    from sbert_nli.sts_suite import AGGREGATIONS, SUITE_SETS

    agg, sets = result["aggregation"], result["sets"]
    names = [n for n in SUITE_SETS if n in sets]
    by_sim = [{"similarity": s, **{n: _cell(sets[n]["aggregations"][agg][f"{s}_spearman"]) for n in names},
               "Avg": _cell(result["averages"][agg][f"{s}_spearman"])} for s in SIMILARITIES]
    by_agg = [{"aggregation": a + (" (used)" if a == agg else ""),
               **{n: _cell(sets[n]["aggregations"][a]["cosine_spearman"]) for n in names},
               "Avg": _cell(result["averages"][a]["cosine_spearman"])} for a in AGGREGATIONS]
    parts = [f"Spearman x100 by similarity function (aggregation {agg}):",
             markdown_table(by_sim, ["similarity", *names, "Avg"]),
             "\nCosine Spearman x100 by aggregation of the STS12-16 sub-files:",
             markdown_table(by_agg, ["aggregation", *names, "Avg"]), "\nSub-files (cosine Spearman x100):"]
    for n in names:
        subs = sets[n]["subsets"]
        if len(subs) > 1:
            parts.append(f"  {n}: " + ", ".join(f"{k} {_cell(v['cosine_spearman'])} ({v['pairs']})" for k, v in subs.items()))
    parts.append("\nSources:")
    parts += [f"  {n}: {sets[n]['source']}" for n in names]
    parts += [f"  {n}: NOT EVALUATED ({why})" for n, why in result["not_evaluated"].items()]
    return "\n".join(parts)


def suite_summary_line(result: dict) -> str:
    """Which aggregation was used, and the Avg caveat when a set is missing."""
    line = f"aggregation of STS12-16 sub-files: {result['aggregation']} [{result['aggregation_note']}]"
    extra = result.get("avg_evaluated")
    if extra:
        left_out = ", ".join(result["not_evaluated"])
        line += (f"\nAvg n/a: {left_out} not evaluated (the paper averages all 7 sets); "
                 f"mean of the {len(extra['sets'])} evaluated sets: {_cell(extra['cosine_spearman'])}")
    return line


def suite_bars_figure(results: list[dict], labels: list[str]):
    """Grouped bar chart as a ``matplotlib.figure.Figure`` (no pyplot state): one group per set (paper
    order, then Avg), one bar per model; a set that was not evaluated has no bar and an "n/a" mark."""
    from matplotlib.figure import Figure

    from sbert_nli.sts_suite import SUITE_SETS

    columns = [*SUITE_SETS, "Avg"]
    width = 0.8 / max(len(results), 1)
    fig = Figure(figsize=(max(8.0, 1.1 * len(columns) * max(1, len(results)) ** 0.5 + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(columns))
    for i, (label, result) in enumerate(zip(labels, results)):
        values = [result["scores"][c] for c in columns]
        heights = [v if v is not None and v == v else 0.0 for v in values]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=model_label(label))
        for bar, value in zip(bars, values):
            text = "n/a" if value is None or value != value else f"{value:.1f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=6, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, columns)
    ax.set_ylabel("Spearman x100 (cosine)")
    ax.set_title(f"STS suite, aggregation '{results[0]['aggregation']}'", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def save_suite_bars(path: str | Path, results: list[dict], labels: list[str]) -> None:
    """Write :func:`suite_bars_figure` as a PNG."""
    suite_bars_figure(results, labels).savefig(path, dpi=HEATMAP_DPI)


def suite_card_section(result: dict) -> str:
    """The model card's STS-suite section (markdown)."""
    return (f"### STS suite (Spearman x100 of cosine similarity, as in the SBERT paper's Table 1)\n\n"
            f"{suite_table([result], ['this model'])}\n\n{suite_summary_line(result)}\n\n"
            + "\n".join(f"- {n}: {s['source']}" for n, s in result["sets"].items())
            + "".join(f"\n- {n}: not evaluated ({why})" for n, why in result["not_evaluated"].items()))
