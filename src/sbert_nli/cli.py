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


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sbert-nli", description="Fine-tune SBERT sentence encoders on NLI; evaluate and compare them.")
    parser.add_argument("--version", action="version", version=f"sbert-nli {__import__('sbert_nli').__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors on stderr, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    p = sub.add_parser("encode", help="sentences (.txt one per line, or .jsonl) -> embeddings .npy")
    p.add_argument("model")
    p.add_argument("--input", "-i", required=True)
    p.add_argument("--output", "-o", required=True, help="a .npy file")
    p.add_argument("--field", default="text", help="jsonl field holding the sentence (default: text)")
    _common_model_args(p)

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
    _common_model_args(p)

    p = sub.add_parser("similarity", help="cosine heatmap of a sentence list and its most similar pairs")
    p.add_argument("model")
    p.add_argument("--sentences", help="text file, one sentence per line (default: a built-in example set)")
    p.add_argument("--plot", help="write the heatmap PNG here")
    p.add_argument("--top-k", type=int, default=5)
    _common_model_args(p)

    p = sub.add_parser("compare", help="several models on the same STS/NLI data: table, JSON and heatmaps")
    p.add_argument("models", nargs="+")
    p.add_argument("--sts", nargs="*", default=[])
    p.add_argument("--nli", nargs="*", default=[])
    p.add_argument("--columns")
    p.add_argument("--sentences", help="sentences for the side-by-side heatmaps (default: built-in set)")
    p.add_argument("--plot", help="write the side-by-side heatmaps PNG here")
    p.add_argument("--json", dest="json_out")
    _common_model_args(p)
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
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.nproc)
    if config.train.engine == "sentence-transformers":
        from sbert_nli.engines.st import train_st

        results = train_st(config, args.output, overwrite=args.overwrite, progress=not (args.no_progress or args.quiet),
                           resume=args.resume or False)
    else:
        from sbert_nli.train import train

        from sbert_nli.precision import resolve_device

        if config.train.reuse_host_memory and resolve_device(config.train.device).type == "cpu":
            from sbert_nli.host_memory import keep_freed_memory  # process-wide, one-way: this process ends with the run

            keep_freed_memory()

        results = train(config, args.output, overwrite=args.overwrite, resume=args.resume or False,
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
        print(f"STS dev Spearman x100 (cosine): {results['dev_spearman']:.2f}")
    if "heldout_accuracy" in results:
        print(f"held-out NLI accuracy: {results['heldout_accuracy']:.4f} ({results['heldout_nli']['pairs']} pairs)")


def _load_encoder(args, name: str | None = None):
    from sbert_nli.model import SentenceEncoder

    return SentenceEncoder.load(name or args.model, getattr(args, "pooling", None), args.max_seq_length,
                                args.trust_remote_code)


def _device_and_precision(args):
    from sbert_nli.precision import resolve_device, resolve_precision

    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def _read_sentences(path: str, field: str = "text") -> list[str]:
    from sbert_nli.data.tables import check_file, decode_text, read_table

    source = check_file(path, (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet"))
    if source.suffix.lower() == ".txt":
        sentences = [line for line in decode_text(source).splitlines() if line.strip()]
    else:
        table = read_table(source)
        if field not in table.columns:
            raise SbertNliError(f"{source}: no '{field}' column (found {', '.join(table.columns)}); pass --field NAME")
        sentences = [str(v) for v in table.columns[field] if isinstance(v, str) and v.strip()]
    if not sentences:
        raise SbertNliError(f"{source} has no sentences")
    return sentences


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

    if not args.output.endswith(".npy"):
        raise SbertNliError(f"--output {args.output} must be a .npy file")
    sentences = _read_sentences(args.input, args.field)
    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args).to(device)
    emb = encoder.encode(sentences, batch_size=args.batch_size, device=device, precision=precision,
                         progress=not args.quiet)

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.save(handle, emb)

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
    return [read_sts(s, sts_cols) for s in args.sts], [read_nli_file(n, nli_cols) for n in args.nli]


def _write_json(path: str, data) -> None:
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def cmd_evaluate(args) -> int:
    from sbert_nli.report import markdown_table

    if not args.sts and not args.nli:
        raise SbertNliError("evaluate needs --sts FILE and/or --nli FILE")
    sts_sets, nli_sets = _read_eval_sets(args)
    result, _ = _evaluate_model(args, args.model, sts_sets, nli_sets)
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
    if args.json_out:
        _write_json(args.json_out, result)
    return 0


def cmd_similarity(args) -> int:
    from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, save_heatmaps, top_pairs

    sentences = _read_sentences(args.sentences) if args.sentences else EXAMPLE_SENTENCES
    device, precision = _device_and_precision(args)
    encoder = _load_encoder(args).to(device)
    sim = cosine_matrix(encoder.encode(sentences, device=device, precision=precision))
    for score, a, b in top_pairs(sim, sentences, args.top_k):
        print(f"{score:.3f}  {a}  <->  {b}")
    if args.plot:
        _atomic_write(Path(args.plot), lambda tmp: save_heatmaps(tmp, [(args.model, sim)], sentences))
        print(f"wrote {args.plot}")
    return 0


def cmd_compare(args) -> int:
    from sbert_nli.report import EXAMPLE_SENTENCES, cosine_matrix, markdown_table, save_heatmaps

    sts_sets, nli_sets = _read_eval_sets(args)
    sentences = _read_sentences(args.sentences) if args.sentences else EXAMPLE_SENTENCES
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
        del encoder
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print(markdown_table(rows, columns))
    if args.json_out:
        _write_json(args.json_out, {"models": results, "table": rows})
    if args.plot:
        _atomic_write(Path(args.plot), lambda tmp: save_heatmaps(tmp, panels, sentences))
        print(f"wrote {args.plot}")
    return 0


COMMANDS = {"train": cmd_train, "encode": cmd_encode, "predict": cmd_predict, "evaluate": cmd_evaluate,
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
