"""Command line: parse, build the config, call one function per command.

Exit codes: 0 success, 2 bad input (one ``error: ...`` line on stderr, no traceback), 1 internal error.
Heavy libraries are imported inside the commands so ``--help`` and input errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other input error
        raise SbertNliError(f"{message} (see `{self.prog} --help`)")


class _Formatter(logging.Formatter):
    def format(self, record):
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        return prefix + record.getMessage()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time, not the stream of when the CLI ran: the
    Python API (notebooks, tests) may log through this logger after sys.stderr was replaced."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# --------------------------------------------------------------------------- argument definitions
TRAIN_OPTIONS = [
    # (flag, section.key, help, extra argparse kwargs)
    ("--model", "model.name", "base model: local folder, hub id, or builtin:tiny-bert", {}),
    ("--train", "data.train", "training data: local .jsonl/.json/.csv/.tsv/.parquet files (or sts-train.csv), snli, mnli, "
     "all-nli:pair|triplet|pair-class|pair-score, stsb:train, owner/name[:subset], builtin:synthetic", {"nargs": "+"}),
    ("--shape", "data.shape", "data shape (default auto: from the column names)",
     {"choices": ["auto", "pair-class", "pair", "triplet", "pair-score"]}),
    ("--eval-sts", "data.eval_sts", "STS file (or stsb) for dev evaluation; the best dev model is kept", {}),
    ("--eval-nli", "data.eval_nli", "NLI file for the trained head's accuracy after training", {}),
    ("--holdout", "data.holdout_fraction", "fraction of training premises held out for NLI accuracy", {"type": float}),
    ("--quoting", "data.quoting", "quoting of .csv/.tsv/.txt files: auto (default), csv (\"-quoted fields) or none "
     "(a \" is text)", {"choices": ["auto", "csv", "none"]}),
    ("--max-train-pairs", "data.max_train_pairs", "use a deterministic subset of N training pairs", {"type": int}),
    ("--loss", "train.loss", "softmax (SBERT paper, NLI), mnr (Multiple Negatives Ranking: NLI, pairs, triplets), "
     "cosine (SBERT regression: scored pairs) or cosent (scored pairs)", {"choices": ["softmax", "mnr", "cosine", "cosent"]}),
    ("--engine", "train.engine", "native (our trainer) or sentence-transformers",
     {"choices": ["native", "sentence-transformers"]}),
    ("--epochs", "train.epochs", "number of epochs", {"type": int}),
    ("--max-steps", "train.max_steps", "stop after N optimiser steps (0 = all epochs)", {"type": int}),
    ("--batch-size", "train.batch_size", "per-device batch size (pairs)", {"type": int}),
    ("--grad-accum", "train.grad_accum", "gradient accumulation steps", {"type": int}),
    ("--lr", "train.lr", "peak learning rate", {"type": float}),
    ("--warmup-ratio", "train.warmup_ratio", "fraction of steps for linear warm-up", {"type": float}),
    ("--weight-decay", "train.weight_decay", "AdamW weight decay (not on bias/LayerNorm)", {"type": float}),
    ("--seed", "train.seed", "random seed (data order, head init, dropout)", {"type": int}),
    ("--precision", "train.precision", "fp32, bf16, fp16 (autocast) or auto", {"choices": ["auto", "fp32", "bf16", "fp16"]}),
    ("--device", "train.device", "auto (cuda > mps > cpu), cpu, cuda[:N], mps", {}),
    ("--pooling", "model.pooling", "mean, cls, max or mean_sqrt_len (default: the model's own, else mean)",
     {"choices": ["mean", "cls", "max", "mean_sqrt_len"]}),
    ("--max-seq-length", "model.max_seq_length", "truncate sentences to N tokens", {"type": int}),
    ("--eval-every", "train.eval_every", "evaluate --eval-sts every N steps (0 = at the end)", {"type": int}),
    ("--save-every", "train.save_every", "write a resumable checkpoint every N steps", {"type": int}),
    ("--report-to", "train.report_to", "experiment tracking: none, tensorboard (<output>/tensorboard/) or wandb",
     {"choices": ["none", "tensorboard", "wandb"]}),
]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a sentence encoder on NLI, pairs, triplets or scored pairs", description=(
        "Train a sentence encoder on NLI pairs (pairs, triplets, scored pairs) and save it as a sentence-transformers "
        "model (with its NLI head for --loss softmax). Settings resolve as: defaults (SBERT paper) < --preset < "
        "--config < options."))
    p.add_argument("--output", "-o", required=True, help="output folder (the model, its config, metrics, report)")
    p.add_argument("--preset", help="a preset from configs/: smoke, sbert-paper, mnr, ...")
    p.add_argument("--config", help="a TOML config file ([model], [data], [train] tables)")
    p.add_argument("--columns", help="column mapping for local files, ROLE=COLUMN: premise/hypothesis/label, "
                   "anchor/positive/negative or sentence1/sentence2/score")
    for flag, key, text, extra in TRAIN_OPTIONS:
        p.add_argument(flag, dest=key, help=text, **extra)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set train.group_by_length=false (repeatable)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder/hub")
    p.add_argument("--overwrite", action="store_true", help="replace the model in a non-empty output folder")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in --output (or the given checkpoint folder)")
    p.add_argument("--nproc", type=int, default=0, help="launch N processes with torchrun (DDP)")
    p.add_argument("--eval-suite", nargs="?", const="", default=None, metavar="ROOT",
                   help="after training, run the STS suite (STS12-16, STSb, SICK-R) from ROOT (default: the hub) "
                        "into results.json and the model card; --set eval_suite.sick=FILE etc. for single sets")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _common_model_args(p, pooling: bool = True) -> None:
    if pooling:
        p.add_argument("--pooling", choices=["mean", "cls", "max", "mean_sqrt_len"],
                       help="pooling for a plain Hugging Face model (default: the model's own, else mean)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"],
                   help="torch, or the exported ONNX graph (fp32 or int8) on onnxruntime; see `sbert-nli export`")


def _add_suite_args(p) -> None:
    """``--suite sts`` and its data options (evaluate, compare); see sbert_nli.sts_suite."""
    from sbert_nli.config import SUITE_AGGREGATIONS

    g = p.add_argument_group("STS suite: the SBERT paper's table (STS12-16, STSb test, SICK-R test; "
                             "no path = every set from the hub)")
    g.add_argument("--suite", choices=["sts"], help="evaluate the seven STS sets and their average")
    g.add_argument("--sts-root", metavar="DIR", help="one folder holding the sets: sts-senteval/ (or SentEval's "
                   "STS12-en-test/ ...), stsbenchmark/sts-test.csv, SICK_test_annotated.txt or SICK.txt")
    g.add_argument("--senteval-dir", metavar="DIR", help="SentEval STS folder with STS12-en-test/ ... STS16-en-test/ "
                   "(or hub, none)")
    g.add_argument("--stsb", metavar="FILE", help="STS benchmark test file sts-test.csv (or hub, none)")
    g.add_argument("--sick", metavar="FILE", help="SICK_test_annotated.txt or SICK.txt (or hub, none)")
    g.add_argument("--aggregation", choices=SUITE_AGGREGATIONS, default="all",
                   help="STS12-16 sub-files: all (default; the SBERT paper's Table 1), mean or wmean (SentEval)")


def _quoting_arg(p) -> None:
    p.add_argument("--quoting", choices=["auto", "csv", "none"], default="auto",
                   help="quoting of .csv/.tsv/.txt tables: auto, csv (\"-quoted fields) or none (a \" is text)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sbert-nli", description="Fine-tune SBERT sentence encoders on NLI; evaluate and compare them.")
    parser.add_argument("--version", action="version", version=f"sbert-nli {__import__('sbert_nli').__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors on stderr, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    p = sub.add_parser("encode", help="sentences (.txt one per line, or a table) -> embeddings .npy, one row per line/row")
    p.add_argument("model")
    p.add_argument("--input", "-i", required=True)
    p.add_argument("--output", "-o", required=True, help="a .npy file")
    p.add_argument("--field", default="text", help="jsonl field holding the sentence (default: text)")
    _common_model_args(p)
    _quoting_arg(p)

    p = sub.add_parser("predict", help="NLI label and probabilities for a premise and a hypothesis")
    p.add_argument("model")
    p.add_argument("premise")
    p.add_argument("hypothesis")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_model_args(p, pooling=False)

    p = sub.add_parser("evaluate", help="STS correlations and NLI accuracy of a model")
    p.add_argument("model")
    p.add_argument("--sts", nargs="*", default=[], help="STS files (sts-test.csv, any csv/tsv/jsonl/parquet) or stsb")
    p.add_argument("--nli", nargs="*", default=[], help="NLI files, scored with the model's trained head")
    p.add_argument("--columns", help="column mapping (sentence1=…,sentence2=…,score=… / premise=…,hypothesis=…,label=…)")
    p.add_argument("--json", dest="json_out", help="also write all metrics to this JSON file")
    _add_suite_args(p)
    _common_model_args(p)
    _quoting_arg(p)

    p = sub.add_parser("similarity", help="cosine heatmap of a sentence list and its most similar pairs")
    p.add_argument("model")
    p.add_argument("--sentences", help="text file, one sentence per line (default: a built-in example set)")
    p.add_argument("--plot", help="write the heatmap PNG here")
    p.add_argument("--top-k", type=int, default=5)
    _common_model_args(p)
    _quoting_arg(p)

    p = sub.add_parser("compare", help="several models on the same STS/NLI data: table, JSON and heatmaps")
    p.add_argument("models", nargs="+")
    p.add_argument("--sts", nargs="*", default=[])
    p.add_argument("--nli", nargs="*", default=[])
    p.add_argument("--columns")
    p.add_argument("--sentences", help="sentences for the side-by-side heatmaps (default: built-in set)")
    p.add_argument("--plot", help="write the side-by-side heatmaps PNG here (with --suite: the grouped bar chart)")
    p.add_argument("--json", dest="json_out")
    _add_suite_args(p)
    _common_model_args(p)
    _quoting_arg(p)

    p = sub.add_parser("export", help="export a model to ONNX (full-pipeline graph + sentence-transformers layout)")
    p.add_argument("model")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", choices=["int8"], help="also write int8 graphs (onnxruntime dynamic quantisation)")
    p.add_argument("--output", "-o", help="folder for the exported model (default: the model folder itself)")
    return parser


# --------------------------------------------------------------------------- commands
def _overrides(args) -> dict:
    from sbert_nli.config import parse_mapping

    out: dict = {}
    for _, key, _, _ in TRAIN_OPTIONS:
        value = getattr(args, key)
        if value is not None:
            section, name = key.split(".")
            out.setdefault(section, {})[name] = value
    if args.columns:
        out.setdefault("data", {})["columns"] = parse_mapping(args.columns)
    if args.trust_remote_code:
        out.setdefault("model", {})["trust_remote_code"] = True
    if args.eval_suite is not None:
        out["eval_suite"] = {"enabled": True, **({"root": args.eval_suite} if args.eval_suite else {})}
    for item in args.set:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise SbertNliError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section.strip(), {})[name.strip()] = value
    return out


def cmd_train(args) -> int:
    from sbert_nli.config import resolve

    config = resolve(args.preset, args.config, _overrides(args))
    if config.eval_suite.enabled:  # check the suite's paths now, not after training
        from sbert_nli.sts_suite import plan_sources

        plan_sources(config.eval_suite)
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.nproc)
    from sbert_nli.api import run_training

    if config.train.engine == "native" and config.train.reuse_host_memory:
        from sbert_nli.precision import resolve_device

        if resolve_device(config.train.device).type == "cpu":
            from sbert_nli.host_memory import keep_freed_memory  # process-wide, one-way: this process ends with the run

            keep_freed_memory()
    results = run_training(config, args.output, overwrite=args.overwrite, resume=args.resume or False,
                           progress=not (args.no_progress or args.quiet))
    if int(os.environ.get("RANK", "0")) == 0:
        _print_train_summary(args.output, results)
    return 0


def _launch_torchrun(nproc: int) -> int:
    import subprocess

    argv = [a for a in sys.argv[1:]]
    # drop "--nproc N" / "--nproc=N" and hand the rest to torchrun
    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        cleaned.append(a)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "sbert_nli", *cleaned]
    log.info("launching: %s", " ".join(command))
    return subprocess.call(command)


def _print_train_summary(output: str, results: dict) -> None:
    print(f"saved model to {output}")
    if "dev_spearman" in results:
        score = results["dev_spearman"]
        print(f"STS dev Spearman x100 (cosine): {'n/a (undefined)' if score is None else f'{score:.2f}'}")
    if "heldout_accuracy" in results:
        print(f"held-out NLI accuracy: {results['heldout_accuracy']:.4f} ({results['heldout_nli']['pairs']} pairs)")
    if "sts_suite" in results:
        from sbert_nli.report import suite_summary_line, suite_table

        print(f"STS suite, Spearman x100 of cosine similarity:\n{suite_table([results['sts_suite']], [output])}\n"
              f"{suite_summary_line(results['sts_suite'])}")


def _load_encoder(args, name: str | None = None):
    if args.backend != "torch":
        from sbert_nli.onnx_backend import OnnxEncoder

        if getattr(args, "pooling", None) or args.max_seq_length:
            raise SbertNliError("--pooling and --max-seq-length are fixed at export time; drop them with --backend onnx")
        return OnnxEncoder.load(name or args.model, quantized=args.backend == "onnx-int8")
    from sbert_nli.model import SentenceEncoder

    return SentenceEncoder.load(name or args.model, getattr(args, "pooling", None), args.max_seq_length,
                                args.trust_remote_code)


def _device_and_precision(args):
    from sbert_nli.precision import resolve_device, resolve_precision

    if args.backend != "torch":  # onnxruntime on the CPU, in the precision of the exported graph
        if args.device not in ("auto", "cpu") or args.precision not in ("auto", "fp32"):
            raise SbertNliError("--backend onnx runs on the CPU in the graph's precision: drop --device/--precision "
                                "(use --backend onnx-int8 for int8)")
        return "cpu", "fp32"
    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def _report_truncation(encoder, name: str = "") -> None:
    """One line per model: how many distinct sentences the command truncated."""
    if encoder.truncated_texts:
        log.warning("%s%d distinct sentence(s) longer than max_seq_length %d tokens were truncated "
                    "(--max-seq-length up to the model's limit keeps more)", f"{name}: " if name else "",
                    len(encoder.truncated_texts), encoder.max_seq_length)


def _atomic_write(target: Path, write) -> None:
    target = Path(target)
    if target.parent and not target.parent.exists():
        raise SbertNliError(f"output folder {target.parent} does not exist")
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise SbertNliError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def cmd_encode(args) -> int:
    import numpy as np

    from sbert_nli.data.tables import read_sentences

    if not args.output.endswith(".npy"):
        raise SbertNliError(f"--output {args.output} must be a .npy file")
    sentences = read_sentences(args.input, args.field, args.quoting)
    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args).to(device)
    emb = encoder.encode(sentences, batch_size=args.batch_size, device=device, precision=precision,
                         progress=not args.quiet)

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.save(handle, emb)

    if emb.shape[0] != len(sentences):  # the row contract: one embedding per input line/row, in order
        raise RuntimeError(f"encode returned {emb.shape[0]} rows for {len(sentences)} sentences")
    _report_truncation(encoder)
    _atomic_write(Path(args.output), write)
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {args.output}")
    return 0


def cmd_predict(args) -> int:
    from sbert_nli.evaluate import predict_nli
    from sbert_nli.losses import LABELS, SoftmaxLoss

    head = SoftmaxLoss.load(Path(args.model) / "nli_head")
    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args).to(device)
    probs = predict_nli(encoder, head, [args.premise], [args.hypothesis], device=device, precision=precision)[0]
    best = int(probs.argmax())
    if args.json:
        print(json.dumps({"label": LABELS[best], "probabilities": dict(zip(LABELS, map(float, probs)))}))
    else:
        print(f"{LABELS[best]} {probs[best]:.2f}  (" + ", ".join(f"{n} {p:.2f}" for n, p in zip(LABELS, probs)) + ")")
    return 0


def _evaluate_model(args, name: str, sts_sets, nli_sets) -> dict:
    from sbert_nli.evaluate import evaluate_nli, evaluate_sts
    from sbert_nli.losses import SoftmaxLoss

    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args, name).to(device)
    result: dict = {"model": name, "sts": {}, "nli": {}}
    for data in sts_sets:
        result["sts"][data.name] = evaluate_sts(encoder, data, args.batch_size, device, precision, progress=not args.quiet)
    if nli_sets:
        head = SoftmaxLoss.load(Path(name) / "nli_head")
        for data in nli_sets:
            result["nli"][data.sources[0].name] = evaluate_nli(encoder, head, data, args.batch_size, device, precision)
    return result, encoder


def _read_eval_sets(args):
    from sbert_nli.config import parse_mapping
    from sbert_nli.data.nli import read_nli_file
    from sbert_nli.data.sts import read_sts

    mapping = parse_mapping(args.columns) if args.columns else {}
    sts_cols = {k: v for k, v in mapping.items() if k in ("sentence1", "sentence2", "score")}
    nli_cols = {k: v for k, v in mapping.items() if k in ("premise", "hypothesis", "label")}
    return ([read_sts(s, sts_cols, args.quoting) for s in args.sts],
            [read_nli_file(n, nli_cols, args.quoting) for n in args.nli])


def _write_json(path: str, data) -> None:
    # allow_nan=False: NaN/Infinity are not JSON; undefined metrics are None (null) by then.
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def cmd_evaluate(args) -> int:
    from sbert_nli.report import markdown_table

    if not args.sts and not args.nli and not args.suite:
        raise SbertNliError("evaluate needs --sts FILE, --nli FILE and/or --suite sts")
    suite = _read_suite(args)
    sts_sets, nli_sets = _read_eval_sets(args)
    result, encoder = _evaluate_model(args, args.model, sts_sets, nli_sets)
    _report_truncation(encoder)
    for name, metrics in result["sts"].items():
        rows = [{"similarity": s, "Pearson": metrics[f"{s}_pearson"], "Spearman": metrics[f"{s}_spearman"]}
                for s in ("cosine", "euclidean", "manhattan", "dot")]
        print(f"STS {name} ({metrics['pairs']} pairs), x100:\n{markdown_table(rows, ['similarity', 'Pearson', 'Spearman'])}\n")
    for name, metrics in result["nli"].items():
        print(f"NLI {name} ({metrics['pairs']} pairs): accuracy {metrics['accuracy'] * 100:.2f}, "
              f"macro-F1 {metrics['macro_f1'] * 100:.2f}")
        rows = [{"class": c, "precision": v["precision"] * 100, "recall": v["recall"] * 100, "support": v["support"]}
                for c, v in metrics["per_class"].items()]
        print(markdown_table(rows, ["class", "precision", "recall", "support"]))
        print("confusion (rows gold, columns predicted; E/N/C):", metrics["confusion"], "\n")
    if suite is not None:
        from sbert_nli.report import suite_details, suite_summary_line, suite_table

        result["suite"] = _score_suite(args, encoder, suite)
        print(f"STS suite, Spearman x100 of cosine similarity (SBERT paper, Table 1 columns):\n"
              f"{suite_table([result['suite']], [args.model])}\n{suite_summary_line(result['suite'])}\n")
        print(suite_details(result["suite"]))
    if args.json_out:
        _write_json(args.json_out, result)
    return 0


# ---- STS suite (issue 14): read the sets once, score each model with sbert_nli.sts_suite
def _read_suite(args):
    """``(loaded sets, reasons for the missing ones)`` for ``--suite sts``; None without it."""
    given = [f for f in ("sts_root", "senteval_dir", "stsb", "sick") if getattr(args, f)]
    if not args.suite:
        if given:
            raise SbertNliError(f"--{given[0].replace('_', '-')} belongs to the STS suite; add --suite sts")
        return None
    from sbert_nli.config import SuiteConfig
    from sbert_nli.sts_suite import load_suite

    config = SuiteConfig(enabled=True, root=args.sts_root, senteval_dir=args.senteval_dir, stsb=args.stsb,
                         sick=args.sick, aggregation=args.aggregation)
    loaded, missing = load_suite(config)
    for name, reason in missing.items():
        log.warning("%s not evaluated: %s", name, reason)
    return loaded, missing


def _score_suite(args, encoder, suite) -> dict:
    from sbert_nli.sts_suite import score_suite

    device, precision = _device_and_precision(args)
    return score_suite(encoder, *suite, args.aggregation, device, precision, args.batch_size, not args.quiet)


def cmd_similarity(args) -> int:
    from sbert_nli.data.tables import read_sentences
    from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, save_heatmaps, top_pairs

    sentences = read_sentences(args.sentences, quoting=args.quoting) if args.sentences else EXAMPLE_SENTENCES
    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args).to(device)
    sim = cosine_matrix(encoder.encode(sentences, device=device, precision=precision))
    _report_truncation(encoder)
    for score, a, b in top_pairs(sim, sentences, args.top_k):
        print(f"{score:.3f}  {a}  <->  {b}")
    if args.plot:
        _atomic_write(Path(args.plot), lambda tmp: save_heatmaps(tmp, [(args.model, sim)], sentences))
        print(f"wrote {args.plot}")
    return 0


def cmd_compare(args) -> int:
    from sbert_nli.data.tables import read_sentences
    from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, markdown_table, save_heatmaps

    suite = _read_suite(args)
    if suite is not None:
        return _compare_suite(args, suite)
    sts_sets, nli_sets = _read_eval_sets(args)
    sentences = read_sentences(args.sentences, quoting=args.quoting) if args.sentences else EXAMPLE_SENTENCES
    device, precision = _device_and_precision(args)
    rows, panels, results = [], [], []
    for name in args.models:
        nli_for_model = nli_sets if (Path(name) / "nli_head").is_dir() else []
        result, encoder = _evaluate_model(args, name, sts_sets, nli_for_model)
        results.append(result)
        row = {"model": name}
        for data_name, metrics in result["sts"].items():
            row[f"{Path(data_name).name} Spearman"] = metrics["cosine_spearman"]
        for data_name, metrics in result["nli"].items():
            row[f"{Path(data_name).name} acc"] = metrics["accuracy"] * 100
        rows.append(row)
        panels.append((name, cosine_matrix(encoder.encode(sentences, device=device, precision=precision))))
        _report_truncation(encoder, name)
        del encoder
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print(markdown_table(rows, columns))
    if args.json_out:
        _write_json(args.json_out, {"models": results, "table": rows})
    if args.plot:
        _atomic_write(Path(args.plot), lambda tmp: save_heatmaps(tmp, panels, sentences))
        print(f"wrote {args.plot}")
    return 0


def _compare_suite(args, suite) -> int:
    """``compare --suite sts``: the paper's table with one row per model, JSON, grouped bar chart."""
    from sbert_nli.report import save_suite_bars, suite_summary_line, suite_table

    if args.sts or args.nli:
        raise SbertNliError("compare --suite sts scores the suite only; run --sts/--nli in a separate compare")
    results = []
    for name in args.models:
        encoder = _load_encoder(args, name).to(_device_and_precision(args)[0])
        results.append({"model": name, **_score_suite(args, encoder, suite)})
        del encoder
    print(f"STS suite, Spearman x100 of cosine similarity:\n{suite_table(results, args.models)}\n"
          f"{suite_summary_line(results[0])}")
    if args.json_out:
        _write_json(args.json_out, {"models": results})
    if args.plot:
        _atomic_write(Path(args.plot), lambda tmp: save_suite_bars(tmp, results, args.models))
        print(f"wrote {args.plot}")
    return 0


def cmd_export(args) -> int:
    from sbert_nli.export import export_onnx

    manifest = export_onnx(args.model, args.output, args.quantize)
    folder = Path(args.output or args.model)
    print(f"wrote {', '.join(manifest['files'].values())} and export.json to {folder / 'onnx'} "
          f"(opset {manifest['opset']}, max abs difference to PyTorch {manifest['max_abs_diff_vs_torch']:.1e})")
    return 0


COMMANDS = {"train": cmd_train, "export": cmd_export, "encode": cmd_encode, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "similarity": cmd_similarity, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(not args.quiet)
        return COMMANDS[args.command](args)
    except SbertNliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code  # 2 bad input, 3 diverged, 130 interrupted (see errors.py)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; lower --batch-size or --max-seq-length", file=sys.stderr)
        return 1
