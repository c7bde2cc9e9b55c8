"""Export a sentence-transformers folder to ONNX, with ``torch.onnx`` and onnxruntime's quantiser.

``sbert-nli export MODEL --format onnx [--quantize int8] [--output DIR]`` writes, under ``DIR/onnx/``
(``DIR`` defaults to the model folder itself)::

    model.onnx                        the transformer alone: input_ids, attention_mask[, token_type_ids]
                                      -> last_hidden_state [B, T, D]; the file
                                      ``SentenceTransformer(DIR, backend="onnx")`` loads
    model_qint8_avx512_vnni.onnx      the same, int8 (``model_kwargs={"file_name": ...}``)
    sentence_embedding.onnx           the whole pipeline: input_ids, attention_mask [B, T] int64 ->
                                      sentence_embedding [B, D] float32 (pooling, and Normalize when
                                      the model has it, inside the graph): onnxruntime alone serves it
    sentence_embedding_qint8.onnx     the same, int8
    export.json                       opset, exporter and library versions, pooling, normalize,
                                      max_seq_length, pad id, quantisation settings, checked error

Both graphs have dynamic batch and sequence axes. They are traced with transformers' eager attention
(the same maths as its default SDPA kernel, to float rounding): its graph adds one additive mask per
layer, where the SDPA trace builds a boolean mask and guards every softmax with IsNaN/Where, which
cost the int8 graph ~7 % of its speed. int8 is onnxruntime's dynamic quantisation (``quantize_dynamic``:
int8 weights with one scale per output channel, activations quantised per batch at run time), the
method and file name of sentence-transformers' ``export_dynamic_quantized_onnx_model(...,
"avx512_vnni")``; per-channel scales bring the embeddings from mean cosine 0.963 to 0.993 with the
fp32 graph's, at the same speed (benchmarks/RESULTS.md §3).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from sbert_nli.errors import SbertNliError

OPSET = 17  # the TorchScript exporter's best-tested opset; onnxruntime >= 1.14 runs it fully
ONNX_DIR = "onnx"
MANIFEST = "export.json"
FILES = {
    "transformer": "model.onnx",
    "transformer_int8": "model_qint8_avx512_vnni.onnx",
    "pipeline": "sentence_embedding.onnx",
    "pipeline_int8": "sentence_embedding_qint8.onnx",
}
QUANTIZE_OPS = ["MatMul", "Attention"]  # the linear layers; embeddings and LayerNorm stay fp32
PER_CHANNEL = True  # one weight scale per output column
ATTENTION = "eager"  # transformers' attention implementation traced into the graphs (module docstring)
PROBE = ["A man is playing a guitar.", "Two dogs run through a field of tall grass near the old barn.", "Hi"]
TOLERANCE = 1e-4  # fp32 graph vs PyTorch, max abs over the probe sentences


def require_onnx():
    """Import onnx and onnxruntime, or raise the one-line error naming the extra that provides them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise SbertNliError("ONNX export and the ONNX backend need onnx and onnxruntime: "
                            "pip install 'sbert-nli[onnx]'") from None
    return onnx, onnxruntime


def export_onnx(model: str, output: str | None = None, quantize: str | None = None) -> dict:
    """Export ``model`` (a folder or hub id our loader reads) into ``output`` (default: the model folder).

    Returns the manifest written to ``onnx/export.json``. Raises :class:`SbertNliError` for a model
    the graphs cannot represent (modules other than Transformer/Pooling/Normalize, pooling modes we
    do not support, a graph that does not reproduce PyTorch to 1e-4) and for unwritable outputs."""
    require_onnx()
    if quantize not in (None, "int8"):
        raise SbertNliError(f"--quantize {quantize} is not supported; use int8")
    from sbert_nli.model import SentenceEncoder, is_path_like, resolve_model_folder, set_attention

    if output is None and not Path(model).is_dir():
        if is_path_like(model):  # a mistyped path, not a hub id: say what is wrong
            resolve_model_folder(model)  # raises: does not exist / is a file
        raise SbertNliError(f"'{model}' is not a local folder; pass --output DIR for the exported model")
    folder = resolve_model_folder(model)
    encoder = SentenceEncoder.load(str(folder)).eval()  # refuses unknown modules and pooling modes
    set_attention(encoder.transformer, ATTENTION)
    target = Path(output) if output else folder
    if target.exists() and not target.is_dir():
        raise SbertNliError(f"--output {target} is a file; pass a folder")
    if target.resolve() != folder.resolve():
        _copy_model(folder, target)
    staging = target / f".tmp-{ONNX_DIR}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        inputs = _export_transformer(encoder, staging / FILES["transformer"])
        _export_pipeline(encoder, staging / FILES["pipeline"])
        diff = _check_pipeline(encoder, staging / FILES["pipeline"])
        if quantize:
            for name in ("transformer", "pipeline"):
                _quantize(staging / FILES[name], staging / FILES[f"{name}_int8"])
        manifest = _manifest(encoder, inputs, quantize, diff)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        final = target / ONNX_DIR
        final.mkdir(exist_ok=True)
        for path in staging.iterdir():  # replace file by file: other files in onnx/ stay
            os.replace(path, final / path.name)
        for stale in ("transformer_int8", "pipeline_int8"):  # an older int8 export no longer matches
            if not quantize and (final / FILES[stale]).exists():
                (final / FILES[stale]).unlink()
    except OSError as exc:
        raise SbertNliError(f"cannot write the export to {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _copy_model(folder: Path, target: Path) -> None:
    """The sentence-transformers files ``SentenceTransformer(target)`` needs (config, tokenizer,
    module folders, weights); training outputs (checkpoints, head, metrics) stay behind."""
    target.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt", ".safetensors", ".model"):
            shutil.copy2(path, target / path.name)
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8")) if (folder / "modules.json").is_file() else []
    for module in modules:
        if module.get("path"):  # an empty module folder (2_Normalize) may be missing from a copy
            if (folder / module["path"]).is_dir():
                shutil.copytree(folder / module["path"], target / module["path"], dirs_exist_ok=True)
            else:
                (target / module["path"]).mkdir(parents=True, exist_ok=True)


def _probe_inputs(encoder, names: list[str], texts: list[str] = PROBE) -> dict:
    import torch

    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_seq_length,
                              return_tensors="pt")
    return {name: batch[name].to(torch.int64) for name in names}


def _export(module, args: tuple, path: Path, inputs: list[str], output: str, output_axes: dict) -> None:
    import torch

    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in inputs}
    axes[output] = output_axes
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter warns that it is legacy and that traced Python conditions are
        # constants; for these encoders the conditions do not depend on the batch (tested on
        # batch 1..N and lengths 2..max_seq_length against PyTorch).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[output],
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def _export_transformer(encoder, path: Path) -> list[str]:
    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoder.tokenizer.model_input_names]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise SbertNliError(f"the tokenizer's inputs {encoder.tokenizer.model_input_names} lack input_ids/attention_mask; "
                            "this model cannot be exported")

    class Transformer(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, *args):
            # the interface optimum's ORTModelForFeatureExtraction runs: named inputs -> last_hidden_state
            return self.transformer(**dict(zip(names, args))).last_hidden_state

    probe = _probe_inputs(encoder, names)
    # .eval(): the exporter restores the wrapper's mode afterwards, and a new module is in train mode
    _export(Transformer(encoder.transformer).eval(), tuple(probe[n] for n in names), path, names, "last_hidden_state",
            {0: "batch_size", 1: "sequence_length"})
    return names


def _export_pipeline(encoder, path: Path) -> None:
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids, attention_mask)  # transformer -> pooling [-> Normalize]

    probe = _probe_inputs(encoder, ["input_ids", "attention_mask"])
    _export(Pipeline(encoder).eval(), (probe["input_ids"], probe["attention_mask"]), path, ["input_ids", "attention_mask"],
            "sentence_embedding", {0: "batch_size"})


def _check_pipeline(encoder, path: Path) -> float:
    """Max abs difference to PyTorch on the probe sentences, padded (batch) and alone (batch 1)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for texts in (PROBE, PROBE[1:2]):
        batch = {k: v.numpy() for k, v in _probe_inputs(encoder, ["input_ids", "attention_mask"], texts).items()}
        with torch.inference_mode():
            ref = encoder(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])).numpy()
        got = session.run(None, batch)[0]
        diff = max(diff, float(np.abs(got - ref).max()))
    if not diff <= TOLERANCE:
        raise SbertNliError(f"the exported graph does not reproduce the PyTorch model (max abs difference {diff:.1e} "
                            f"> {TOLERANCE:g}); this architecture cannot be exported with opset {OPSET}")
    return diff


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a "consider pre-processing" hint on the root logger, which would also install
    # a root handler (logging.basicConfig); its symbolic shape inference fails on these graphs anyway.
    # A temporary quiet handler keeps the process's logging as we found it.
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL,
                         reduce_range=False, op_types_to_quantize=QUANTIZE_OPS)
    finally:
        root.removeHandler(quiet)
        root.setLevel(level)


def _manifest(encoder, inputs: list[str], quantize: str | None, diff: float) -> dict:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import sbert_nli

    quantization = None
    if quantize:
        quantization = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                        "activations": "QUInt8, dynamic per batch", "per_channel": PER_CHANNEL, "reduce_range": False,
                        "op_types": QUANTIZE_OPS, "calibration_data": None}
    return {
        "format": "onnx", "opset": OPSET, "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "attention": ATTENTION,
        "versions": {"sbert_nli": sbert_nli.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "files": {k: v for k, v in FILES.items() if quantize or not k.endswith("_int8")},
        "transformer_inputs": inputs, "pipeline_inputs": ["input_ids", "attention_mask"],
        "pooling": encoder.pooling, "normalize": encoder.normalize, "dim": encoder.dim,
        "max_seq_length": encoder.max_seq_length, "do_lower_case": encoder.do_lower_case,
        "pad_token_id": int(encoder.tokenizer.pad_token_id or 0),
        "quantization": quantization, "max_abs_diff_vs_torch": diff,
    }
