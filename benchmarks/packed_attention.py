"""Does attention without padding pay on this CPU? Packed (nested, jagged) SDPA against padded SDPA
with a mask, forward + backward, at MiniLM's training shapes (issue 18's "attention without
padding" lever). Medians of interleaved repeats; prints the CPU features.

    python benchmarks/packed_attention.py [--rows 24] [--heads 12] [--head-dim 32] [--repeats 5]

Both compute the same attention over the real tokens (checked: max abs difference printed).
"""

from __future__ import annotations

import argparse
import time
import warnings

from common import median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--min-len", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
    torch.manual_seed(0)
    lens = torch.randint(args.min_len, args.max_len + 1, (args.rows,)).tolist()
    width, h, d = max(lens), args.heads, args.head_dim
    xs = [torch.randn(n, h, d) for n in lens]

    def packed():
        q = torch.nested.nested_tensor(xs, layout=torch.jagged, requires_grad=True).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, q, q)
        out.values().sum().backward()
        return out.transpose(1, 2)

    def padded():
        x = torch.zeros(len(lens), width, h, d)
        for i, t in enumerate(xs):
            x[i, : len(t)] = t
        x.requires_grad_(True)
        mask = torch.arange(width)[None, :] < torch.tensor(lens)[:, None]
        out = F.scaled_dot_product_attention(x.transpose(1, 2), x.transpose(1, 2), x.transpose(1, 2),
                                             attn_mask=mask[:, None, None, :])
        (out * mask[:, None, :, None]).sum().backward()
        return out.transpose(1, 2)

    a, b = packed(), padded()
    diff = max(float((a[i] - b[i, : lens[i]]).abs().max()) for i in range(len(lens)))

    def timed(f, n=20):
        f()
        start = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - start) / n * 1e3

    times = {"packed (nested jagged SDPA)": [], "padded SDPA + mask": []}
    for _ in range(args.repeats):
        times["packed (nested jagged SDPA)"].append(timed(packed))
        times["padded SDPA + mask"].append(timed(padded))
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"{args.rows} rows, lengths {min(lens)}-{max(lens)}, {h} heads x {d}; real tokens {sum(lens) / (len(lens) * width):.0%} of padded")
    base = median(times["padded SDPA + mask"])
    for name, values in times.items():
        print(f"  {name}: {median(values):.2f} ms fwd+bwd ({base / median(values):.2f}x padded)")
    print(f"  max abs difference on real tokens: {diff:.1e}")


if __name__ == "__main__":
    main()
