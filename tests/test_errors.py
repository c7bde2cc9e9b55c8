"""Every user mistake: exit code 2, one stderr line starting with 'error:' that names the culprit,
no traceback, and no output left behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbert_nli.cli import main

GOOD_ROWS = '{"premise": "a b", "hypothesis": "c", "label": "neutral"}\n'


def _write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def _train(tmp, *extra, data=None):
    return ["train", "--preset", "smoke", "--output", str(tmp / "out"), "--no-progress",
            *(["--train", data] if data else []), *extra]


# (id, argv builder, fragments the single error line must contain)
CASES = [
    ("missing file", lambda t, m: _train(t, data=str(t / "nope.jsonl")), ["nope.jsonl", "does not exist"]),
    ("empty file", lambda t, m: _train(t, data=_write(t, "e.jsonl", "")), ["e.jsonl", "empty"]),
    ("unknown extension", lambda t, m: _train(t, data=_write(t, "d.xlsx", "x")), ["d.xlsx", "unknown file type"]),
    ("directory for a file", lambda t, m: _train(t, data=str(t)), ["is a directory"]),
    ("missing columns", lambda t, m: _train(t, data=_write(t, "c.csv", "s1,s2,gold\na,b,0\n")),
     ["c.csv", "missing column(s) premise, hypothesis, label", "columns found: s1, s2, gold", "--columns"]),
    ("unknown labels", lambda t, m: _train(t, data=_write(t, "l.jsonl", GOOD_ROWS + ''.join(
        f'{{"premise": "p", "hypothesis": "h", "label": "{x}"}}\n' for x in ["yes", "no", 7, 8, 9, 10]))),
     ["l.jsonl", "6 label(s)", "line 2: 'yes'", "line 6: '9'"]),
    ("all labels -1", lambda t, m: _train(t, data=_write(t, "n.jsonl", '{"premise": "a", "hypothesis": "b", "label": -1}\n' * 3)),
     ["n.jsonl", "no usable pairs", "3 without gold label"]),
    ("mixed labels", lambda t, m: _train(t, data=_write(t, "x.tsv", "premise\thypothesis\tlabel\na\tb\t1\nc\td\tneutral\n")),
     ["x.tsv", "mixes integer labels (line 2) and label names (line 3)"]),
    ("invalid utf-8", lambda t, m: _train(t, data=_write(t, "u.jsonl", GOOD_ROWS.encode() + b'{"premise": "\xff"}\n')),
     ["u.jsonl:2", "not valid UTF-8"]),
    ("broken jsonl line", lambda t, m: _train(t, data=_write(t, "b.jsonl", GOOD_ROWS + '{"premise": \n')),
     ["b.jsonl:2", "broken JSON line"]),
    # (a bare '"' alone is text now: the file must fit neither the quoted nor the unquoted reading)
    ("broken csv line", lambda t, m: _train(t, data=_write(t, "q.csv", 'premise,hypothesis,label\n"a,b\n')),
     ["q.csv", "cannot read with delimiter ','", "line 2"]),
    ("holdout leaves nothing", lambda t, m: _train(t, data=_write(t, "one.csv", 'premise,hypothesis,label\na,b,0\n')),
     ["holdout fraction 0.1 of 1 distinct premise(s) leaves no training pairs"]),
    ("wrong field count", lambda t, m: _train(t, data=_write(t, "w.tsv", "premise\thypothesis\tlabel\na\tb\n")),
     ["w.tsv:2", "2 fields, but the header has 3"]),
    ("sts score not a number", lambda t, m: ["evaluate", m, "--sts", _write(t, "s.csv", "sentence1,sentence2,score\na,b,high\nc,d,1\n")],
     ["s.csv:2", "'high' is not a number"]),
    ("sts too few rows", lambda t, m: ["evaluate", m, "--sts", _write(t, "s1.csv", "sentence1,sentence2,score\na,b,1\n")],
     ["s1.csv", "at least 2"]),
    ("model path not a model", lambda t, m: ["encode", str(t), "--input", _write(t, "i.txt", "hi\n"), "--output", str(t / "e.npy")],
     ["not a model folder"]),
    ("hub id offline", lambda t, m: ["encode", "someone/unknown-model-xyz", "--input", _write(t, "i.txt", "hi\n"),
                                     "--output", str(t / "e.npy")], ["someone/unknown-model-xyz", "local"]),
    ("predict without head", lambda t, m: ["predict", m, "a", "b"], ["no trained NLI head", "nli_head"]),
    ("output not empty", lambda t, m: (_write(t, "keep.txt", "x"), ["train", "--preset", "smoke", "--output", str(t)])[1],
     ["exists and is not empty", "--overwrite"]),
    ("unknown config key", lambda t, m: _train(t, "--set", "train.learning_rate=1"), ["train.learning_rate", "did you mean 'lr'"]),
    ("unknown key in config file", lambda t, m: _train(t, "--config", _write(t, "c.toml", "[train]\nbatchsize = 4\n")),
     ["c.toml", "train.batchsize", "did you mean 'batch_size'"]),
    ("wrong type", lambda t, m: _train(t, "--set", "train.epochs=two"), ["train.epochs", "integer"]),
    ("lr <= 0", lambda t, m: _train(t, "--lr", "0"), ["train.lr", "> 0"]),
    ("batch size 0", lambda t, m: _train(t, "--batch-size", "0"), ["train.batch_size", ">= 1"]),
    ("warm-up ratio > 1", lambda t, m: _train(t, "--warmup-ratio", "1.5"), ["train.warmup_ratio"]),
    ("max_seq_length above limit", lambda t, m: ["encode", m, "--input", _write(t, "i.txt", "hi\n"), "--output",
                                                 str(t / "e.npy"), "--max-seq-length", "1024"], ["max_seq_length 1024", "512"]),
    ("unknown preset", lambda t, m: ["train", "--preset", "huge", "--output", str(t / "o")], ["unknown preset 'huge'", "smoke"]),
    ("bad toml", lambda t, m: _train(t, "--config", _write(t, "bad.toml", "[train\n")), ["bad.toml", "not valid TOML"]),
    ("cuda absent", lambda t, m: _train(t, "--device", "cuda"), ["--device cuda", "no CUDA GPU"]),
    ("fp16 on cpu", lambda t, m: _train(t, "--device", "cpu", "--precision", "fp16"), ["fp16", "not supported on CPU"]),
    ("bad option", lambda t, m: ["train", "--output", str(t / "o"), "--epochz", "1"], ["unrecognized arguments: --epochz"]),
    ("encode output not npy", lambda t, m: ["encode", m, "--input", _write(t, "i.txt", "hi\n"), "--output", str(t / "e.txt")],
     [".npy"]),
    ("bad columns mapping", lambda t, m: _train(t, "--columns", "premise"), ["--columns", "ROLE=COLUMN"]),
]


@pytest.mark.parametrize("name, build, fragments", CASES, ids=[c[0] for c in CASES])
def test_user_mistakes_give_one_line_errors(name, build, fragments, tmp_path, capsys, minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name == "cuda absent":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    argv = build(tmp_path, minilm)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    if argv[0] == "train" and name != "output not empty":
        assert not (tmp_path / "out").exists()  # nothing half-written


def test_error_in_a_real_process_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sbert_nli", "train", "--preset", "smoke", "--output", str(tmp_path / "o"),
                             "--train", str(tmp_path / "missing.csv")], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: data file {tmp_path / 'missing.csv'} does not exist"]


def test_overwrite_keeps_unrelated_files(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["-q", "train", "--preset", "smoke", "--set", "data.synthetic_pairs=300", "--epochs", "1",
                 "--output", str(out), "--overwrite", "--no-progress"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()


def test_the_cli_log_handler_follows_a_replaced_stderr(capsys):
    """After `main()` ran with one stderr, later logging (e.g. the Python API in the same process)
    must write to the current stderr, not the first one (it raised 'I/O operation on closed file')."""
    import io
    import logging
    import sys

    assert main(["predict", "no-such-model", "a", "b"]) == 2
    capsys.readouterr()
    replaced, sys.stderr = sys.stderr, io.StringIO()
    try:
        logging.getLogger("sbert_nli").warning("after the replacement")
        assert sys.stderr.getvalue() == "warning: after the replacement\n"
    finally:
        sys.stderr = replaced
