"""train.embedding_grad_buffer: the same gradients and the same training run as autograd's dense
embedding backward."""

import numpy as np
import torch

from sbert_nli.config import resolve
from sbert_nli.data.examples import softmax_examples
from sbert_nli.data.synthetic import synthetic_nli
from sbert_nli.embedding_grad import for_transformer
from sbert_nli.losses import SoftmaxLoss
from sbert_nli.model import SentenceEncoder
from sbert_nli.train import make_batch, train


def _grads(encoder, head, batches, buffer) -> list[dict]:
    """Per batch: every parameter's gradient after backward (the buffer reset between batches as
    the trainer does after an optimiser step)."""
    out = []
    for chunks, pos, labels, _ in batches:
        emb = torch.cat([encoder(ids, mask) for ids, mask in chunks])
        head(emb, pos[0], pos[1], labels).backward()
        out.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
        encoder.zero_grad(set_to_none=True)
        if buffer is not None:
            buffer.reset()
    return out


def test_buffer_gives_the_dense_gradient_over_chunks_and_steps(tiny_encoder):
    d = synthetic_nli(200, seed=1)
    ex = softmax_examples(d, tiny_encoder.tokenizer, 32)
    # split_cost 1: several chunks of different padded lengths per batch; two batches = two steps.
    batches = [make_batch(ex, np.arange(s, s + 24), True, torch.device("cpu"), 1) for s in (0, 24)]
    assert all(len(b[0]) > 1 for b in batches)
    torch.manual_seed(0)
    head = SoftmaxLoss(tiny_encoder.dim)
    dense = _grads(tiny_encoder, head, batches, None)
    buffer = for_transformer(tiny_encoder.transformer)
    assert buffer is not None and buffer.padding_idx == 0
    with buffer:
        buffered = _grads(tiny_encoder, head, batches, buffer)
        assert float(buffer.buffer.abs().sum()) == 0.0  # reset left no stale rows
    name = "transformer.embeddings.word_embeddings.weight"
    for a, b in zip(dense, buffered):
        assert a.keys() == b.keys() and name in a
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
        assert float(b[name][0].abs().sum()) == 0.0  # the padding row gets nothing
    assert tiny_encoder.transformer.get_input_embeddings().weight.grad is None  # uninstalled on exit
    with torch.no_grad():  # and the lookup is the plain one again
        ids, mask = batches[0][0][0]
        torch.testing.assert_close(tiny_encoder(ids, mask), tiny_encoder(ids, mask))


def test_not_used_where_it_would_be_wrong(tiny_encoder):
    transformer = tiny_encoder.transformer
    transformer.get_input_embeddings().weight.requires_grad_(False)
    assert for_transformer(transformer) is None  # frozen
    transformer.get_input_embeddings().weight.requires_grad_(True)
    transformer.tied = torch.nn.Linear(32, 300, bias=False)
    transformer.tied.weight = transformer.get_input_embeddings().weight
    assert for_transformer(transformer) is None  # shared with another module: its rows would go untracked


def test_training_run_is_the_same_with_and_without(tmp_path):
    finals = []
    for on in (True, False):
        config = resolve("smoke", None, {"data": {"synthetic_pairs": 1200}, "train": {
            "epochs": 1, "max_steps": 12, "embedding_grad_buffer": on, "device": "cpu"}})
        results = train(config, tmp_path / f"run-{on}", progress=False)
        finals.append((results, SentenceEncoder.load(str(tmp_path / f"run-{on}"))))
    (a, ma), (b, mb) = finals
    assert a["steps"] == b["steps"] == 12
    for (name, pa), pb in zip(ma.transformer.named_parameters(), mb.transformer.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4, msg=name)
    assert abs(a["heldout_accuracy"] - b["heldout_accuracy"]) <= 0.01
