"""The example notebook runs top to bottom in a fresh Jupyter kernel (nbclient), on the offline MiniLM
and the local data, with small settings injected after its parameters cell (papermill's convention).
Any failing cell fails the test (nbclient raises CellExecutionError with the cell and its traceback)."""

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "softmax_walkthrough.ipynb"
SMALL = "STEPS = 4\nMAX_SEQ_LENGTH = 32\nSTS_PAIRS = 80"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])]


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, data, minilm):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(SMALL, metadata={"tags": ["injected-parameters"]}))
    monkeypatch.setenv("SBERT_NLI_DATA", str(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"notebook ran in {time.perf_counter() - started:.0f} s; slowest cells:")
    for seconds, source in sorted(((_seconds(c), c.source) for c in nb.cells if c.cell_type == "code"), reverse=True)[:4]:
        print(f"  {seconds:6.1f} s  {source.splitlines()[0][:70]}")

    def outputs(fragment):
        cell = next(c for c in nb.cells if c.cell_type == "code" and fragment in c.source)
        return cell.outputs

    figures = [o for o in outputs("sbert_nli.plot_similarity(models") if "image/png" in o.get("data", {})]
    assert len(figures) == 1  # the side-by-side heatmap, inline
    assert any("image/png" in o.get("data", {}) for o in outputs('plot_training(OUTPUT / "softmax")'))
    table = next(o for o in outputs("scores = {name") if "text/plain" in o.get("data", {}))["data"]["text/plain"]
    assert all(name in table for name in ("base", "softmax", "MNR")) and "80" in table
    prediction = next(o for o in outputs('softmax_model.predict("A man') if "text/plain" in o.get("data", {}))
    assert "'label':" in prediction["data"]["text/plain"] and "'probabilities':" in prediction["data"]["text/plain"]
    for run in ("softmax", "mnr"):
        assert (tmp_path / "runs" / run / "model.safetensors").is_file()
    assert list((tmp_path / "runs" / "softmax" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "runs" / "softmax" / "results.json").read_text().count('"steps": 4')


def _seconds(cell) -> float:
    from datetime import datetime

    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
