"""Dropout with its random masks drawn by numpy's PCG64 instead of torch's CPU generator.

torch's CPU dropout fills each mask element by element from its global Mersenne Twister
(``bernoulli_``, serial): 7.6-8 % of a MiniLM training step on AVX2 CPUs, more than anything else
outside the matrix products (benchmarks/RESULTS.md §8). numpy's PCG64 (O'Neill 2014; numpy's
default bit generator) fills a 170k-element mask 4-5x faster on the same core (1.27 vs 0.29 ms
with the seeding, AMD EPYC AVX2; inside a training step about 2x, cold caches).

What is computed is torch's inverted dropout (Srivastava et al. 2014; ``at::native::_dropout_impl``):
``out = x * noise``, ``noise = keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)`` i.i.d., the same
float values and the same backward (``grad * noise``). Only where ``keep`` comes from changes: one
int64 seed per dropout call is drawn from torch's default CPU generator, and PCG64 seeded with it
(and, on ranks > 0, the rank) draws 32-bit words, an element kept when its word is
>= ``round(p * 2**32)`` (so ``P(drop)`` equals ``p`` to 2**-32). torch's generator stays the only random state: a checkpoint's saved RNG state,
GradCache's replay of a chunk's dropout (``gradcache.RngState``) and a resumed run reproduce
these masks exactly as they reproduced torch's.

Used on CPU only (``train.fast_dropout``): on a GPU torch's fused dropout kernel is already fast and
a host-drawn mask would have to be copied over. :func:`enable` swaps the encoder's ``nn.Dropout``
modules for :class:`PCG64Dropout` (a subclass: same ``p``, same ``train()``/``eval()``) and
:func:`disable` puts the originals back, so the saved model is untouched (dropout has no weights).
Attention-probability dropout goes through it where the padding-free attention runs
(``padding_free.packed_attention``); transformers' own SDPA attention keeps torch's generator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_WORD_RANGE = 2 ** 32
_SEED_RANGE = 2 ** 62


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A bool CPU tensor of ``shape``, each element True (kept) with probability ``1 - p``
    (0 < p < 1), independently; deterministic given torch's default CPU generator state (one seed
    drawn from it per call) and this process's distributed rank (mixed into the seed, so that ranks
    seeded alike, as every rank is, do not draw the same masks call for call)."""
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:  # as torch: nothing drawn for an empty tensor
        return torch.ones(shape, dtype=torch.bool)
    seed = int(torch.randint(0, _SEED_RANGE, (), generator=torch.default_generator))
    rank = _rank()
    generator = np.random.PCG64(seed if rank == 0 else [seed, rank])
    words = generator.random_raw((n + 1) // 2).view(np.uint32)[:n]  # two 32-bit words per 64-bit draw
    return torch.from_numpy(words >= round(p * _WORD_RANGE)).view(shape)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of ``x`` (any shape and float dtype, on CPU) with drop probability ``p`` in
    [0, 1]: ``x * keep / (1 - p)``, as torch's ``F.dropout(x, p, training=True)`` computes it, with the
    mask from :func:`keep_mask`. Raises ValueError for ``p`` outside [0, 1]."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 0.0:
        return x
    if p == 1.0:  # as torch: everything dropped, still differentiable
        return x * x.new_zeros(())
    noise = keep_mask(x.shape, p).to(x.dtype).div_(1 - p)
    return x * noise


class PCG64Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks come from :func:`keep_mask` (same ``p``, same train/eval
    behaviour, no weights). ``inplace`` is not supported: the output is always a new tensor. Hooks
    registered on the module it replaced do not carry over."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p) if self.training else x


def enable(encoder: nn.Module) -> int:
    """Swap every ``nn.Dropout`` inside ``encoder`` for a :class:`PCG64Dropout` with the same ``p``
    (each keeps the module it replaced, unregistered, for :func:`disable`). Returns how many."""
    targets = [(parent, name, child) for parent in encoder.modules() for name, child in parent.named_children()
               if type(child) is nn.Dropout]  # exactly torch's: a subclass may do something else
    for parent, name, child in targets:
        fast = PCG64Dropout(child.p)
        fast.train(child.training)
        fast.__dict__["replaced"] = child  # not a submodule: modules() and state_dict() stay as before
        setattr(parent, name, fast)
    return len(targets)


def active(encoder: nn.Module) -> bool:
    """Whether ``encoder`` holds a :class:`PCG64Dropout` that drops anything (``p`` > 0)."""
    return any(isinstance(m, PCG64Dropout) and m.p > 0 for m in encoder.modules())


def disable(encoder: nn.Module) -> None:
    """Put back the ``nn.Dropout`` modules :func:`enable` replaced (before saving the model)."""
    targets = [(parent, name, child) for parent in encoder.modules() for name, child in parent.named_children()
               if isinstance(child, PCG64Dropout) and "replaced" in child.__dict__]
    for parent, name, child in targets:
        child.replaced.train(child.training)
        child.replaced.p = child.p  # a p changed meanwhile stays changed
        setattr(parent, name, child.replaced)
