"""Serve an exported model with onnxruntime alone: ``tokenizer.json`` (the ``tokenizers`` library) plus
the full-pipeline graph ``onnx/sentence_embedding[_qint8].onnx`` written by :mod:`sbert_nli.export`.

No torch and no transformers are imported here. :class:`OnnxEncoder` has the same ``encode`` contract
as :meth:`sbert_nli.model.SentenceEncoder.encode` (one float32 row per input text, in input order;
duplicates encoded once; length-sorted batches), so ``encode``, ``evaluate``, ``similarity`` and
``compare`` take either. Sessions run with denormal floats flushed to zero (:mod:`sbert_nli.denormals`)
and without onnxruntime's SkipLayerNormalization fusion (``DISABLED_OPTIMIZERS``): both measured faster.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sbert_nli import denormals
from sbert_nli.errors import SbertNliError

# onnxruntime (1.32) fuses each residual Add + LayerNormalization into SkipLayerNormalization, whose
# CPU kernel took 0.52 s of a 4.0 s int8 encode where the unfused pair took 0.29 s: int8 encoding is
# ~11 % faster without the fusion, fp32 unchanged (one thread, 2,000 sentences; RESULTS.md §3).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


class OnnxEncoder:
    """Token ids -> sentence embeddings through one onnxruntime session on the CPU."""

    def __init__(self, session, tokenizer, manifest: dict):
        self.session = session
        self.tokenizer = tokenizer  # tokenizers.Tokenizer
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self.max_seq_length = int(manifest["max_seq_length"])
        self.pooling = manifest["pooling"]
        self.normalize = bool(manifest["normalize"])
        self.do_lower_case = bool(manifest.get("do_lower_case", False))
        self.truncated_texts: set[str] = set()  # as SentenceEncoder: distinct texts cut to max_seq_length

    @classmethod
    def load(cls, model: str | Path, quantized: bool = False, threads: int = 0) -> OnnxEncoder:
        """Load ``model`` (the exported model folder, or its ``onnx/`` folder).

        ``quantized`` picks the int8 graph; ``threads`` > 0 caps onnxruntime's intra-op threads (0: one
        per physical core, onnxruntime's default). Raises :class:`SbertNliError` when onnxruntime is
        missing, the folder has no export, or the int8 graph was not exported."""
        from sbert_nli.export import FILES, MANIFEST, ONNX_DIR, require_onnx

        _, ort = require_onnx()
        folder = Path(model)
        onnx_dir = folder if (folder / MANIFEST).is_file() else folder / ONNX_DIR
        if not (onnx_dir / MANIFEST).is_file():
            raise SbertNliError(f"{folder} has no ONNX export ({ONNX_DIR}/{MANIFEST}); "
                                f"run `sbert-nli export {folder} --format onnx` first")
        manifest = json.loads((onnx_dir / MANIFEST).read_text(encoding="utf-8"))
        graph = onnx_dir / FILES["pipeline_int8" if quantized else "pipeline"]
        if not graph.is_file():
            hint = " --quantize int8" if quantized else ""
            raise SbertNliError(f"{graph} is missing; run `sbert-nli export {folder} --format onnx{hint}`")
        tokenizer_file = onnx_dir.parent / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise SbertNliError(f"{tokenizer_file} is missing: the ONNX backend needs the fast tokenizer file")
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        if denormals.available():  # the pool threads flush denormals too (see sbert_nli.denormals)
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Created inside the block: onnxruntime also sets the flags on the thread that creates the
        # process's first session, for good; the block puts that thread's flags back.
        with denormals.denormals_as_zero():
            session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=DISABLED_OPTIMIZERS)
        return cls(session, Tokenizer.from_file(str(tokenizer_file)), manifest)

    def to(self, device) -> OnnxEncoder:
        """The CPU only: the graph runs on onnxruntime's CPUExecutionProvider."""
        if str(device) != "cpu":
            raise SbertNliError(f"the ONNX backend runs on the CPU only, not {device}; pass --device cpu")
        return self

    def encode(self, texts: list[str], batch_size: int = 64, device=None, precision: str = "fp32",
               progress: bool = False, token_budget: int = 0) -> np.ndarray:
        """Embeddings [N, D] as float32 numpy, in input order (``device``/``precision`` accepted for
        the PyTorch signature: the CPU and the graph's own precision only).

        Same tokenisation (truncation to ``max_seq_length``, stripping), de-duplication and
        longest-first batching as the PyTorch path, so rows match it to float rounding; texts cut to
        ``max_seq_length`` are collected in ``truncated_texts`` for the command's one-line report."""
        from sbert_nli.data.batching import TokenStore, encode_batches, intern

        if device is not None:
            self.to(device)
        if precision not in ("fp32", None):
            raise SbertNliError(f"precision {precision} does not apply to the ONNX backend (its graph fixes it)")
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        unique, (index,) = intern(texts)
        handle = SimpleNamespace(backend_tokenizer=self.tokenizer, pad_token_id=self.manifest["pad_token_id"])
        store = TokenStore.build(unique, handle, self.max_seq_length)
        if store.truncated_rows is not None:
            self.truncated_texts.update(unique[i] for i in store.truncated_rows)
        order = np.argsort(-store.lengths, kind="stable")
        out = np.empty((len(unique), self.dim), dtype=np.float32)
        with denormals.denormals_as_zero():  # the attention softmax's denormal terms (see sbert_nli.denormals)
            for rows in encode_batches(order, store.lengths, batch_size, token_budget):
                input_ids, attention_mask = store.pad(rows)
                out[rows] = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        return out[index]
