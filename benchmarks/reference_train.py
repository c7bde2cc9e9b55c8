"""The reference for process_speed.py: the same training run written as plain sentence-transformers 6.x,
the way its documentation trains SBERT on NLI (training_nli.py: a ``datasets.Dataset`` of premise /
hypothesis / label, ``SentenceTransformer(model)``, ``SoftmaxLoss``, ``SentenceTransformerTrainer``,
``EmbeddingSimilarityEvaluator`` on STSb dev, ``model.save``), at its fastest setting on this machine:
fused AdamW, fp32 unless bf16 is native.

    python benchmarks/reference_train.py --model MODEL --train snli_dev.jsonl mnli_dev_matched.jsonl \\
        --eval-sts sts-dev.jsonl --max-steps 40 --batch-size 16 --output /tmp/ref

The last stdout line is JSON: the STSb dev Spearman and this script's phases in seconds (imports,
data, model, training, evaluation, save), each from ``time.perf_counter`` around that phase.
"""

import time

started = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer  # noqa: E402
from sentence_transformers.sentence_transformer import losses  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator  # noqa: E402
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments  # noqa: E402

# The Hugging Face snli / glue convention, that of sentence-transformers/all-nli pair-class.
LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def bf16_native() -> bool:
    """AVX512-BF16 or AMX on a CPU whose torch dispatches AVX-512 (emulated bf16 is slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def main() -> None:
    phases = {"imports": time.perf_counter() - started}
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", nargs="+", required=True, help="NLI jsonl files: premise, hypothesis, label (strings)")
    parser.add_argument("--eval-sts", required=True, help="STSb dev jsonl: sentence1, sentence2, score (0-5)")
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", required=True)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_native())

    mark = time.perf_counter()
    train = datasets.load_dataset("json", data_files=args.train, split="train")
    train = train.map(lambda row: {"label": LABELS[row["label"]]})
    sts = datasets.load_dataset("json", data_files=args.eval_sts, split="train")
    evaluator = EmbeddingSimilarityEvaluator(sentences1=list(sts["sentence1"]), sentences2=list(sts["sentence2"]),
                                             scores=[s / 5 for s in sts["score"]], main_similarity="cosine",
                                             name="sts-dev")
    phases["data"] = time.perf_counter() - mark

    mark = time.perf_counter()
    model = SentenceTransformer(args.model)
    model.max_seq_length = 128
    loss = losses.SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(), num_labels=len(LABELS))
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output + "/trainer", max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=2e-5, warmup_steps=0.1, weight_decay=0.01, bf16=bf16, optim="adamw_torch_fused",
        # bf16 without CUDA means the CPU's (bf16_native): transformers refuses it unless told the CPU is meant;
        # otherwise it picks the device itself (CUDA, MPS, XPU) as before.
        use_cpu=bf16 and not torch.cuda.is_available(),
        save_strategy="no", logging_steps=max(1, args.max_steps), report_to="none", disable_tqdm=True, seed=42)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train, loss=loss)
    phases["model"] = time.perf_counter() - mark

    mark = time.perf_counter()
    trainer.train()
    phases["training"] = time.perf_counter() - mark

    mark = time.perf_counter()
    scores = evaluator(model)
    phases["evaluation"] = time.perf_counter() - mark

    mark = time.perf_counter()
    model.save(args.output + "/final")
    phases["save"] = time.perf_counter() - mark
    spearman = next(v for k, v in scores.items() if k.endswith("spearman_cosine"))
    print(json.dumps({"dev_spearman": 100 * spearman, "precision": "bf16" if bf16 else "fp32", "phases": phases}))


if __name__ == "__main__":
    main()
