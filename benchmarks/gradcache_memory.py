"""Peak memory and time of one MNR training step: batch B, batch B*K, and batch B*K cached in K chunks
(GradCache, ``sbert_nli.gradcache``), on NLI triplets (SNLI dev) with all-MiniLM-L6-v2.

    python benchmarks/gradcache_memory.py --batch 32 --chunks 8 --repeats 2

Peak memory: bytes torch held allocated on the CPU during the step above what it held before
(profiler memory events, ``gradcache.peak_allocated_bytes``); the weights and optimiser state are
allocated before and not counted, the parameter gradients are. Time: medians of interleaved repeats.
Also prints the step-1 loss of each variant: the cached one equals the B*K one."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from common import data_dir, model_path

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sbert_nli.data.batching import collate, no_duplicate_batches
    from sbert_nli.data.examples import mnr_examples
    from sbert_nli.data.nli import read_nli_file
    from sbert_nli.gradcache import cached_backward, peak_allocated_bytes
    from sbert_nli.losses import MultipleNegativesRankingLoss
    from sbert_nli.model import SentenceEncoder

    torch.manual_seed(0)
    encoder = SentenceEncoder.load(model_path(args.model), None, 128).train()
    for module in encoder.modules():  # dropout off: the three variants compute comparable losses
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    examples = mnr_examples(read_nli_file(str(data_dir() / "nli" / "normalized" / "snli_dev.jsonl")),
                            encoder.tokenizer, 128)
    roles = examples.roles
    has_neg = np.flatnonzero(roles["negative"] >= 0)
    columns = [r[has_neg] for r in roles.values()]
    big = args.batch * args.chunks
    batch = no_duplicate_batches(columns, big, seed=0, epoch=0)[0]
    loss_fn = MultipleNegativesRankingLoss()

    def inputs(index, n_chunks):
        chunks, positions = collate(examples.store, [c[index] for c in columns], True, 0, n_chunks)
        return [(torch.from_numpy(i), torch.from_numpy(m)) for i, m in chunks], [torch.from_numpy(p) for p in positions]

    def variant(index, n_chunks, cached):
        chunks, positions = inputs(index, n_chunks)
        out = {}

        def step():
            if cached:
                out["loss"] = cached_backward(lambda c: encoder(*c), chunks, lambda e: loss_fn(e, *positions)).item()
            else:
                loss = loss_fn(torch.cat([encoder(*c) for c in chunks]), *positions)
                loss.backward()
                out["loss"] = loss.item()
            encoder.zero_grad(set_to_none=True)

        def run():
            started = time.perf_counter()
            step()
            seconds = time.perf_counter() - started
            return {"peak_mib": peak_allocated_bytes(step) / 2**20, "seconds": seconds, "loss": out["loss"]}
        return run

    variants = {f"batch {args.batch}": variant(batch[: args.batch], 1, False),
                f"batch {big}": variant(batch, 1, False),
                f"batch {big} cached = {args.batch} x {args.chunks}": variant(batch, args.chunks, True)}
    results = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            results[name].append(run())
            print(f"  {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    print(f"| step (MNR, {args.model}, SNLI dev triplets) | peak MiB allocated | s/step | step-1 loss |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(r['peak_mib'] for r in runs):.0f} | "
              f"{statistics.median(r['seconds'] for r in runs):.2f} | {runs[0]['loss']:.4f} |")


if __name__ == "__main__":
    main()
