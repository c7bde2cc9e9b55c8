"""DDP (gloo on CPU): the same update as one process on the global batch; MNR cross-rank gathering."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from sbert_nli.cli import main

# Dropout off: the processes draw different dropout masks, which is correct but not comparable.
ARGS = ["--preset", "smoke", "--set", "data.synthetic_pairs=900", "--set", "model.dropout=0", "--max-steps", "12",
        "--lr", "1e-3", "--no-progress", "--device", "cpu"]


def _weights(folder):
    return {**load_file(str(folder / "model.safetensors")),
            **{f"head.{k}": v for k, v in load_file(str(folder / "nli_head/head.safetensors")).items()}}


def _torchrun(nproc, args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "sbert_nli", "-q", "train", *args], env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    ddp = _torchrun(2, [*ARGS, "--batch-size", "4", "--output", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert main(["-q", "train", *ARGS, "--batch-size", "8", "--output", str(tmp_path / "single")]) == 0
    assert main(["-q", "train", *ARGS, "--batch-size", "4", "--grad-accum", "2", "--output", str(tmp_path / "accum")]) == 0
    ddp_w, single_w, accum_w = (_weights(tmp_path / n) for n in ("ddp", "single", "accum"))
    moved = max((single_w[k] - ddp_w[k]).abs().max().item() for k in single_w)
    for key in single_w:
        assert torch.allclose(ddp_w[key], single_w[key], atol=1e-5, rtol=0), key
        assert torch.allclose(accum_w[key], single_w[key], atol=1e-5, rtol=0), key
    assert moved <= 1e-5
    # rank 0 alone wrote the log: one line per step
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 12 // 10 + 1


GATHER_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {src!r})
from sbert_nli.distributed import gather_candidates
from sbert_nli.losses import MultipleNegativesRankingLoss
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
emb = torch.randn(14, 6)  # the same on both ranks: rows 0-5 anchors, 6-11 positives, 12-13 negatives
anchors, positives = torch.arange(0, 6), torch.arange(6, 12)
negatives = torch.tensor([12]) if rank == 0 else torch.tensor([13])  # ranks hold different negative counts
mine = slice(0, 3) if rank == 0 else slice(3, 6)
for symmetric in (False, True):
    leaf = emb.clone().requires_grad_(True)
    loss = MultipleNegativesRankingLoss(symmetric=symmetric)(leaf, anchors[mine], positives[mine], negatives,
                                                             gather=gather_candidates)
    loss.backward()
    grad = leaf.grad.clone()
    dist.all_reduce(grad)
    value = loss.detach().clone()
    dist.all_reduce(value)
    if rank == 0:
        ref_leaf = emb.clone().requires_grad_(True)
        ref = MultipleNegativesRankingLoss(symmetric=symmetric)(ref_leaf, anchors, positives, torch.tensor([12, 13]))
        ref.backward()
        assert torch.allclose(value / 2, ref, atol=1e-6), (value / 2, ref)
        assert torch.allclose(grad / 2, ref_leaf.grad, atol=1e-6)
        print("ok", symmetric, flush=True)
    dist.barrier()
dist.destroy_process_group()
"""


def test_mnr_gathers_aligned_candidates_across_ranks(tmp_path):
    """Two ranks with gathered candidates give the loss and gradients of one process on the whole batch."""
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT.format(src=os.path.abspath(src)))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok") == 2
