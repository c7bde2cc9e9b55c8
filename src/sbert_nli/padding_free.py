"""Padding-free training: the dense layers of a padded batch run on its real tokens only.

In a padded batch ``[B, L]`` every linear layer (Q, K, V, attention output, both feed-forward
layers: about 70 % of a CPU training step's time) also multiplies the padding positions, whose
results are thrown away. Here the transformer runs on the batch's real tokens packed into one row
``[1, T]`` (``T`` = number of real tokens), each token keeping its own position id; only attention,
which must see one sentence at a time, is scattered back to ``[B, heads, L, head_dim]`` and run by
SDPA with the key-padding mask, then gathered again. The result for every real token is the same
function as the padded forward (tested to float rounding, values and gradients); the padding
positions, which pooling ignores, come back as zeros.

This is the "padding-free" layout of transformers' ``DataCollatorWithFlattening`` and of
flash-attention's varlen kernels (Dao et al., 2022), done here with the standard SDPA kernel so it
runs on every device. It plugs into transformers' own attention registry
(``AttentionInterface.register``): the model's layers, parameters and saved files are untouched, and
any call without packing information (evaluation, ``encode``) runs transformers' SDPA attention
exactly as before. Registering adds one name (``ATTENTION_NAME``) to transformers' process-wide
attention and mask registries and never removes it: a new, unique key that changes nothing for any
other model or name.

What changes in training is only how the hidden-state dropout masks are drawn (over ``T`` real
tokens instead of ``B x L`` positions; attention-probability dropout keeps the padded ``[B, h, L, L]``
layout, drawn by SDPA, or by sbert_nli.dropout's PCG64 when the attention module's dropout is a
``PCG64Dropout``): same distribution, different random stream, so a run's per-step losses differ
from the padded layout's within seed noise (benchmarks/RESULTS.md §8: full-epoch seeds).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from sbert_nli.dropout import PCG64Dropout
from sbert_nli.dropout import dropout as pcg64_dropout

log = logging.getLogger("sbert_nli")

ATTENTION_NAME = "sbert_nli_padding_free"
# Position ids of a sentence's tokens, per model family: BERT counts from 0, RoBERTa-style models from
# padding_idx + 1 (RobertaEmbeddings.create_position_ids_from_input_ids). Other families are not
# packed (their embeddings compute positions differently, or their attention is not SDPA).
POSITION_OFFSET = {"bert": lambda config: 0,
                   "roberta": lambda config: config.pad_token_id + 1,
                   "xlm-roberta": lambda config: config.pad_token_id + 1,
                   "camembert": lambda config: config.pad_token_id + 1}


class Packing:
    """Where the real tokens of a right-padded batch are: ``index`` (int64 ``[T]``, positions in the
    flattened ``[B * L]`` batch, row-major), the same as (row, position) pairs, and the key-padding
    mask (bool ``[B, 1, 1, L]``) for SDPA."""

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.rows, self.positions = attention_mask.nonzero(as_tuple=True)
        self.index = self.rows * self.length + self.positions
        self.key_mask = attention_mask.bool()[:, None, None, :]

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """``[T, *rest]`` -> ``[B, L, *rest]``, zeros at the padding positions (differentiable)."""
        rest = packed.shape[1:]
        out = packed.new_zeros((self.batch * self.length, *rest)).index_copy_(0, self.index, packed)
        return out.view(self.batch, self.length, *rest)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[B, L, *rest]`` -> ``[T, *rest]``: the real tokens, in row-major order (differentiable)."""
        return padded.reshape(self.batch * self.length, *padded.shape[2:]).index_select(0, self.index)

    def to_heads(self, packed: torch.Tensor) -> torch.Tensor:
        """``[T, heads, head_dim]`` -> contiguous ``[B, heads, L, head_dim]`` (SDPA's layout), zeros at
        padding: written in place, so no transposed copy is made in either direction."""
        out = packed.new_zeros((self.batch, packed.shape[1], self.length, packed.shape[2]))
        out[self.rows, :, self.positions] = packed
        return out

    def from_heads(self, heads: torch.Tensor) -> torch.Tensor:
        """``[B, heads, L, head_dim]`` -> ``[T, heads, head_dim]``, the real tokens' rows."""
        return heads[self.rows, :, self.positions]


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packing=None, **kwargs):
    """transformers attention interface: query/key/value ``[1, heads, T, head_dim]`` of a packed
    batch -> ``([1, T, heads, head_dim], None)``, each sentence attending to its own tokens only
    (SDPA, Vaswani et al. 2017 eq. 1, with attention-probability dropout ``dropout``). Without
    ``packing`` (any unpacked call) it is transformers' own SDPA attention, unchanged."""
    if packing is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    # [1, h, T, d] is a transposed view of the projection's [1, T, h, d]: undo it (a view, no copy).
    q, k, v = (packing.to_heads(x.transpose(1, 2).squeeze(0)) for x in (query, key, value))  # [B, h, L, d]
    if dropout > 0 and isinstance(getattr(module, "dropout", None), PCG64Dropout):
        out = _attention_with_pcg64_dropout(q, k, v, packing.key_mask, scaling, dropout)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=packing.key_mask, dropout_p=dropout, scale=scaling)
    return packing.from_heads(out).unsqueeze(0), None


def _attention_with_pcg64_dropout(q, k, v, key_mask, scaling, p):
    """SDPA's own CPU path when dropout is on (``at::_scaled_dot_product_attention_math``: half
    precision inputs upcast to fp32, q and k each scaled by sqrt(scale), the bool mask added as
    0 / -inf, softmax, dropout, times v, the result cast back), with the dropout mask from
    :func:`sbert_nli.dropout.keep_mask` instead of torch's generator. ``[B, h, L, d]`` in and out;
    ``key_mask`` bool ``[B, 1, 1, L]`` with at least one real key per row (a fully masked row would
    give NaN here, 0 in torch's ``_safe_softmax``: padded batches never have one). Raises ValueError
    for a negative ``scaling``."""
    scale = scaling if scaling is not None else 1.0 / math.sqrt(q.shape[-1])
    if scale < 0:
        raise ValueError(f"packed attention needs a non-negative scaling, got {scale}")
    root = math.sqrt(scale)
    with torch.autocast(q.device.type, enabled=False):  # autocast would run the matmuls and softmax in bf16
        qf, kf, vf = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (q, k, v))
        scores = torch.matmul(qf * root, kf.transpose(-2, -1) * root)
        scores = scores.masked_fill(~key_mask, float("-inf"))
        out = torch.matmul(pcg64_dropout(torch.softmax(scores, dim=-1), p), vf)
    return out.to(q.dtype)


def token_embeddings(transformer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last hidden state ``[B, L, D]`` of a right-padded batch (``input_ids``/``attention_mask``
    int64 ``[B, L]``) computed padding-free; zeros at padding positions. Raises RuntimeError when
    the transformer was not prepared by :func:`enable` (its attention would mix the sentences)."""
    if transformer.config._attn_implementation != ATTENTION_NAME:  # any other attention would ignore packing
        raise RuntimeError("padding_free.token_embeddings needs a transformer prepared by padding_free.enable")
    packing = Packing(attention_mask)
    offset = POSITION_OFFSET[transformer.config.model_type](transformer.config)
    positions = packing.unpad(attention_mask.cumsum(1) - 1 + offset).unsqueeze(0)
    ids = packing.unpad(input_ids).unsqueeze(0)
    hidden = transformer(input_ids=ids, position_ids=positions, packing=packing).last_hidden_state
    return packing.pad(hidden.squeeze(0))  # squeeze, not [0]: its backward is a view, not zeros + copy


def enable(encoder) -> bool:
    """Switch ``encoder`` (a SentenceEncoder) to padding-free training when its model can be packed:
    a supported family (``POSITION_OFFSET``), transformers' SDPA attention, and a probe batch whose
    packed and padded outputs agree to 1e-4 of their scale in eval mode. Returns whether it was
    enabled; when it is not (or preparing the model raises: remote code, an unusual attention
    module), training runs the padded forward as before, the attention is left as it was, and the
    log says why."""
    transformer = encoder.transformer
    config = transformer.config
    reason = None
    if config.model_type not in POSITION_OFFSET:
        reason = f"model type '{config.model_type}' is not packed (supported: {', '.join(POSITION_OFFSET)})"
    elif getattr(config, "_attn_implementation", None) != "sdpa":
        reason = f"attention is '{config._attn_implementation}', not sdpa"
    if reason is None:
        try:
            _register()
            transformer.set_attn_implementation(ATTENTION_NAME)
            diff = _probe(encoder)
            if diff > 1e-4:
                reason = f"its packed and padded outputs differ by {diff:.2g} (relative) on a probe batch"
        except Exception as exc:  # noqa: BLE001 - any failure means: train padded, as before
            reason = f"preparing it failed ({type(exc).__name__}: {str(exc)[:200]})"
        if reason:
            transformer.set_attn_implementation("sdpa")
    if reason:
        log.info("padding-free training off: %s", reason)
        return False
    encoder.padding_free = True
    log.info("padding-free training: linear layers on real tokens only (train.padding_free=false to train padded)")
    return True


def disable(encoder) -> None:
    """Back to the padded forward and transformers' SDPA attention (before saving the model)."""
    if encoder.padding_free:
        encoder.transformer.set_attn_implementation("sdpa")
        encoder.padding_free = False


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # unpacked calls get SDPA's own mask


@torch.no_grad()
def _probe(encoder) -> float:
    """Max abs difference of the last hidden states, packed vs padded, relative to their max abs
    value, on two sentences of different lengths (eval mode: no dropout)."""
    from sbert_nli.data.batching import TokenStore

    store = TokenStore.build(["a probe sentence of several words", "short"], encoder.tokenizer, encoder.max_seq_length)
    ids, mask = (torch.from_numpy(a).long().to(next(encoder.parameters()).device) for a in store.pad(np.arange(2)))
    was_training = encoder.transformer.training
    encoder.transformer.eval()
    try:
        padded = encoder.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        packed = token_embeddings(encoder.transformer, ids, mask)
    finally:
        encoder.transformer.train(was_training)
    real = mask.bool()
    return float((padded[real] - packed[real]).abs().max() / padded[real].abs().max().clamp(min=1e-12))
