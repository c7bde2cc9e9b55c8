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


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def save_heatmaps(path: str | Path, panels: list[tuple[str, np.ndarray]], sentences: list[str]) -> tuple[int, int]:
    """One figure, one heatmap per (title, matrix), on a shared colour scale. Returns pixel (w, h)."""
    plt = _plt()
    vmin = min(float(m.min()) for _, m in panels)
    vmax = 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=heatmap_size(len(panels)), dpi=HEATMAP_DPI, squeeze=False,
                             layout="constrained")
    image = None
    for ax, (title, sim) in zip(axes[0], panels):
        image = _draw_heatmap(ax, sim, sentences, model_label(title), vmin, vmax)
        if ax is not axes[0][0]:
            ax.set_yticks(range(len(sentences)), [str(i) for i in range(len(sentences))])
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="cosine similarity (shared scale)")
    fig.savefig(path, dpi=HEATMAP_DPI)
    width, height = fig.canvas.get_width_height()
    plt.close(fig)
    return width, height


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def plot_training_curves(metrics_file: Path, target: Path) -> bool:
    records = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        return False
    plt = _plt()
    dev = [r for r in records if "dev_spearman" in r]
    fig, axes = plt.subplots(1, 2 if dev else 1, figsize=(10 if dev else 5.5, 3.8), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
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
