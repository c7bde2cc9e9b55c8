"""ONNX export and the onnxruntime backend (issue 17): the graphs reproduce PyTorch on real sentences,
int8 keeps STSb quality, the CLI keeps the row-for-row contract, and what cannot be exported is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [onnx] extra: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="needs the [onnx] extra: pip install -e '.[onnx]'")

from sbert_nli.cli import main  # noqa: E402
from sbert_nli.export import FILES, export_onnx  # noqa: E402
from sbert_nli.model import SentenceEncoder, build_tiny_bert, pool  # noqa: E402
from sbert_nli.onnx_backend import OnnxEncoder  # noqa: E402


@pytest.fixture(scope="session")
def sts_test(data):
    from sbert_nli.data.sts import read_sts

    return read_sts(str(data / "stsbenchmark" / "sts-test.csv"))


@pytest.fixture(scope="session")
def sentences(sts_test) -> list[str]:
    texts = list(dict.fromkeys(sts_test.sentence1 + sts_test.sentence2))[:1000]
    assert len(texts) == 1000
    return texts


@pytest.fixture(scope="session")
def minilm_export(minilm, tmp_path_factory):
    """MiniLM (mean pooling + Normalize) exported once per session, fp32 and int8."""
    folder = tmp_path_factory.mktemp("minilm-onnx")
    export_onnx(minilm, str(folder), "int8")
    return folder


@pytest.fixture(scope="session")
def tiny_folder(tiny_texts, tmp_path_factory):
    """A saved tiny model (no Normalize), max_seq_length 32 so long sentences are truncated."""
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32, seed=0).save(folder)
    return folder


def test_minilm_fp32_equals_pytorch(minilm, minilm_export, sentences):
    ref = SentenceEncoder.load(minilm).encode(sentences)
    got = OnnxEncoder.load(minilm_export).encode(sentences)
    assert got.shape == ref.shape == (1000, 384) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize is inside the graph
    manifest = json.loads((minilm_export / "onnx" / "export.json").read_text())
    assert (manifest["pooling"], manifest["normalize"], manifest["opset"]) == ("mean", True, 17)
    assert manifest["versions"]["onnxruntime"] == ort.__version__ and manifest["quantization"]["weight_type"] == "QInt8"


def test_transformer_graph_has_the_interface_sentence_transformers_runs(minilm, minilm_export, sentences):
    """onnx/model.onnx is what optimum's ORTModelForFeatureExtraction feeds: the tokenizer's inputs by
    name, last_hidden_state out, dynamic batch and length; our pooling on it gives the embeddings."""
    import torch

    encoder = SentenceEncoder.load(minilm)
    session = ort.InferenceSession(str(minilm_export / "onnx" / FILES["transformer"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    assert session.get_inputs()[0].shape == ["batch_size", "sequence_length"]
    texts = sentences[:64]
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="np")
    tokens = session.run(None, {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    emb = pool(torch.from_numpy(tokens), torch.from_numpy(batch["attention_mask"]), "mean")
    emb = torch.nn.functional.normalize(emb, dim=1).numpy()
    assert float(np.abs(emb - encoder.encode(texts)).max()) <= 1e-4


@pytest.mark.parametrize("pooling, normalize", [("mean", False), ("cls", False), ("max", False), ("mean_sqrt_len", True)])
def test_tiny_model_every_pooling_equals_pytorch(tiny_folder, tmp_path, sentences, pooling, normalize):
    encoder = SentenceEncoder.load(str(tiny_folder), pooling=pooling)
    encoder.normalize = normalize
    encoder.save(tmp_path)
    export_onnx(str(tmp_path))  # default output: the model folder itself
    ref = SentenceEncoder.load(str(tmp_path)).encode(sentences)
    onnx_encoder = OnnxEncoder.load(tmp_path)
    assert (onnx_encoder.pooling, onnx_encoder.normalize) == (pooling, normalize)
    assert float(np.abs(onnx_encoder.encode(sentences) - ref).max()) <= 1e-4
    # batch 1 and every length: the traced graph holds no batch- or length-specific constant
    assert float(np.abs(onnx_encoder.encode(sentences[:40], batch_size=1) - ref[:40]).max()) <= 1e-4


def test_int8_keeps_stsb_spearman_within_half_a_point(minilm_export, sts_test):
    from sbert_nli.evaluate import evaluate_sts

    fp32 = evaluate_sts(OnnxEncoder.load(minilm_export), sts_test)["cosine_spearman"]
    int8 = evaluate_sts(OnnxEncoder.load(minilm_export, quantized=True), sts_test)["cosine_spearman"]
    print(f"STSb test Spearman x100: fp32 {fp32:.2f}, int8 {int8:.2f}")
    assert 81.5 < fp32 < 82.5  # all-MiniLM-L6-v2's own number
    assert abs(fp32 - int8) <= 0.5
    quantized = minilm_export / "onnx" / FILES["pipeline_int8"]
    assert quantized.stat().st_size < 0.7 * (minilm_export / "onnx" / FILES["pipeline"]).stat().st_size


def test_int8_embeddings_stay_close_to_fp32(minilm_export, sentences):
    """Per-channel weight scales: one scale per tensor gave mean cosine 0.963, min 0.838 here."""
    fp32 = OnnxEncoder.load(minilm_export).encode(sentences)
    int8 = OnnxEncoder.load(minilm_export, quantized=True).encode(sentences)
    cosine = (fp32 * int8).sum(axis=1) / np.linalg.norm(int8, axis=1)
    print(f"int8 vs fp32 cosine: mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert cosine.mean() > 0.99 and cosine.min() > 0.95


def test_int8_graph_quantises_every_linear_layer_per_channel(minilm_export):
    import onnx

    graph = onnx.load(str(minilm_export / "onnx" / FILES["pipeline_int8"])).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    linear = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(linear) == 6 * 6  # per layer: query, key, value, attention output, intermediate, output
    for node in linear:
        _, out_features = weights[node.input[1]]
        assert weights[node.input[1].replace("_quantized", "_scale")] == [out_features]  # a scale per column
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & set(weights)]
    manifest = json.loads((minilm_export / "onnx" / "export.json").read_text())
    assert manifest["quantization"]["per_channel"] is True and manifest["attention"] == "eager"
    # the eager-attention trace adds one additive mask per layer; the SDPA trace guarded each softmax
    # with IsNaN/Where, ~7 % of the int8 graph's time
    fp32_ops = {n.op_type for n in onnx.load(str(minilm_export / "onnx" / FILES["pipeline"]), load_external_data=False).graph.node}
    assert "IsNaN" not in fp32_ops and "Softmax" in fp32_ops


def test_onnx_backend_leaves_the_float_flags_as_found(minilm_export, tmp_path):
    """OnnxEncoder flushes denormals only while it runs; onnxruntime's own switch, set on the first
    session of a process, would leave the creating thread flushing for good (the control below)."""
    from sbert_nli import denormals

    if not denormals.available():
        pytest.skip("denormal flushing is set through x86-64 glibc only")
    probe = "import numpy as np; print(np.float32(1e-39) * np.float32(1.0) == 0)"
    ours = (f"from sbert_nli.onnx_backend import OnnxEncoder; e = OnnxEncoder.load({str(minilm_export)!r}, quantized=True);"
            f"e.encode(['A man plays a guitar.', 'Hi']); {probe}")
    plain = ("import onnxruntime as ort; o = ort.SessionOptions(); o.add_session_config_entry('session.set_denormal_as_zero', '1');"
             f"ort.InferenceSession({str(minilm_export / 'onnx' / FILES['pipeline'])!r}, o, providers=['CPUExecutionProvider']); {probe}")
    flushed = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()
               for code in (ours, plain)]
    assert flushed == ["False", "True"]


def test_sentence_transformers_onnx_backend_loads_our_folder(minilm, minilm_export, sentences):
    """SentenceTransformer(folder, backend="onnx") needs optimum-onnx, which requires transformers<4.58:
    it cannot be installed beside sentence-transformers 6, so it runs in a separate Python."""
    python = os.environ.get("SBERT_NLI_ST_ONNX_PYTHON")
    if not python:
        pytest.skip("set SBERT_NLI_ST_ONNX_PYTHON to a Python with sentence-transformers[onnx] (5.x: optimum-onnx "
                    "does not resolve with sentence-transformers 6's transformers>=5)")
    texts = sentences[:200]
    script = ("import json, sys, numpy as np; from sentence_transformers import SentenceTransformer\n"
              "texts = json.loads(sys.stdin.read())\n"
              "for name in sys.argv[2:]:\n"
              "    m = SentenceTransformer(sys.argv[1], backend='onnx', device='cpu', model_kwargs={'file_name': name})\n"
              "    print(json.dumps(m.encode(texts).tolist()))\n")
    result = subprocess.run([python, "-c", script, str(minilm_export), "onnx/" + FILES["transformer"],
                             "onnx/" + FILES["transformer_int8"]], input=json.dumps(texts), capture_output=True, text=True,
                            timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    fp32, int8 = (np.array(json.loads(line), dtype=np.float32) for line in result.stdout.splitlines())
    ref = SentenceEncoder.load(minilm).encode(texts)
    assert float(np.abs(fp32 - ref).max()) <= 1e-4
    # int8 activations are quantised per batch at run time, so int8 rows depend on their batch mates:
    # the library's int8 file and ours agree in quality, not to the last digit
    ours_int8 = OnnxEncoder.load(minilm_export, quantized=True).encode(texts)
    for name, rows in (("sentence-transformers int8", int8), ("sbert-nli int8", ours_int8)):
        cosine = (rows * ref).sum(axis=1)
        print(f"{name}: cosine to fp32 mean {cosine.mean():.4f}, min {cosine.min():.4f}")
        assert cosine.mean() > 0.95 and cosine.min() > 0.8


def test_cli_encode_onnx_same_rows_as_torch(minilm_export, tmp_path, capsys):
    lines = ["A man is playing a guitar.", "A man is playing a guitar.", "  Two dogs run in a field. ", "ok",
             " ".join(["word"] * 600)]  # longer than max_seq_length: reported once, by every backend
    source = tmp_path / "s.txt"
    source.write_text("\n".join(lines) + "\n")
    outputs = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        outputs[backend] = tmp_path / f"{backend}.npy"
        capsys.readouterr()
        assert main(["-q", "encode", str(minilm_export), "-i", str(source), "-o", str(outputs[backend]),
                     "--backend", backend]) == 0
        err = capsys.readouterr().err
        assert [line for line in err.splitlines() if "truncated" in line] == [
            "warning: 1 distinct sentence(s) longer than max_seq_length 256 tokens were truncated "
            "(--max-seq-length up to the model's limit keeps more)"], backend
    torch_rows, onnx_rows, int8_rows = (np.load(outputs[b]) for b in ("torch", "onnx", "onnx-int8"))
    assert torch_rows.shape == onnx_rows.shape == int8_rows.shape == (len(lines), 384)
    assert float(np.abs(onnx_rows - torch_rows).max()) <= 1e-4
    assert (int8_rows * torch_rows).sum(axis=1).min() > 0.8  # int8: close, not equal (one-word rows lose most)


def test_cli_export_writes_layout_and_manifest(tiny_folder, tmp_path, capsys, caplog):
    import logging

    out = tmp_path / "exported"
    handlers, level = list(logging.getLogger().handlers), logging.getLogger().level
    assert main(["-q", "export", str(tiny_folder), "--format", "onnx", "--quantize", "int8", "--output", str(out)]) == 0
    assert (logging.getLogger().handlers, logging.getLogger().level) == (handlers, level)  # logging left as found
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # the quantiser's root-logger hint
    assert "opset 17" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "onnx").iterdir()) == sorted([*FILES.values(), "export.json"])
    for name in ("modules.json", "tokenizer.json", "config.json", "1_Pooling/config.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "onnx" / "export.json").read_text())
    assert manifest["normalize"] is False and manifest["quantization"]["op_types"] == ["MatMul", "Attention"]
    # re-exporting without --quantize removes the int8 graphs that no longer match
    assert main(["-q", "export", str(out)]) == 0
    assert not (out / "onnx" / FILES["pipeline_int8"]).exists()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_refusals_are_one_line(tiny_folder, tmp_path, capsys, monkeypatch):
    from sbert_nli import export

    dense = tmp_path / "dense"
    shutil.copytree(tiny_folder, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    assert main(["export", str(dense)]) == 2
    assert "module 'Dense' is not supported" in _error(capsys)
    assert not (dense / "onnx").exists()

    text = tmp_path / "s.txt"
    text.write_text("hello\n")
    assert main(["encode", str(tiny_folder), "-i", str(text), "-o", str(tmp_path / "e.npy"), "--backend", "onnx"]) == 2
    assert "no ONNX export" in _error(capsys) and not (tmp_path / "e.npy").exists()

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any graph now "fails" the PyTorch check
    assert main(["export", str(tiny_folder)]) == 2
    assert "does not reproduce the PyTorch model" in _error(capsys)
    assert not (tiny_folder / "onnx").exists() and not (tiny_folder / ".tmp-onnx").exists()
    monkeypatch.undo()

    assert main(["export", str(tiny_folder), "--output", str(text)]) == 2
    assert "is a file" in _error(capsys)
    assert main(["export", str(tiny_folder), "--quantize", "int4"]) == 2
    assert "int4" in _error(capsys)
    # a mistyped path names the real problem, not the missing --output of a hub id
    assert main(["export", str(tmp_path / "no-such-model")]) == 2
    assert "does not exist" in _error(capsys)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the [onnx] extra is not installed
    assert main(["export", str(tiny_folder)]) == 2
    assert "pip install 'sbert-nli[onnx]'" in _error(capsys)


def test_backend_options_that_do_not_apply_are_refused(minilm_export, tmp_path, capsys):
    export_fp32 = tmp_path / "fp32"
    text = tmp_path / "s.txt"
    text.write_text("hello\n")
    args = ["encode", str(minilm_export), "-i", str(text), "-o", str(tmp_path / "e.npy"), "--backend", "onnx"]
    assert main([*args, "--device", "cuda"]) == 2
    assert "CPU" in _error(capsys)
    assert main([*args, "--precision", "bf16"]) == 2
    assert "onnx-int8" in _error(capsys)
    assert main([*args, "--pooling", "cls"]) == 2
    assert "fixed at export time" in _error(capsys)
    (export_fp32 / "onnx").mkdir(parents=True)
    for name in ("onnx/export.json", "onnx/" + FILES["pipeline"], "tokenizer.json"):  # an export without int8
        shutil.copy2(minilm_export / name, export_fp32 / name)
    assert main(["encode", str(export_fp32), "-i", str(text), "-o", str(tmp_path / "e.npy"), "--backend", "onnx-int8"]) == 2
    assert "--quantize int8" in _error(capsys)
