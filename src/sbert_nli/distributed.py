"""DDP plumbing (launched by torchrun; see train.py for the batch semantics): the process group
from torchrun's environment, barriers, and cross-rank candidates for MNR."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Read torchrun's environment; start the process group (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), world, local)


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()



class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

        parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank = dist.get_rank()
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads):
        import torch.distributed as dist

        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[ctx.rank]


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All ranks' rows of ``x`` (ranks may hold different row counts), with gradients flowing back."""
    import torch.distributed as dist

    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.cat([x, x.new_zeros(max(sizes) - x.shape[0], *x.shape[1:])]) if max(sizes) > x.shape[0] else x
    parts = _AllGather.apply(padded.contiguous())  # each rank's loss reaches every rank's embeddings
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sizes


def gather_candidates(positives: torch.Tensor, negatives: torch.Tensor, anchors: torch.Tensor):
    """MNR candidates from every rank: (all positives, all negatives, all anchors) in rank order, and
    the offset of this rank's positives in them (its anchors' targets). Under DDP's gradient averaging
    the update equals one process computing the loss over the global batch."""
    import torch.distributed as dist

    all_pos, sizes = _gather_rows(positives)
    all_neg, _ = _gather_rows(negatives)
    all_anchor, _ = _gather_rows(anchors)
    return (all_pos, all_neg, all_anchor), sum(sizes[: dist.get_rank()])
