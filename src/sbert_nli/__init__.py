"""sbert-nli: fine-tune SBERT sentence encoders on NLI, evaluate and compare them.

Python API (see ``sbert_nli.api``)::

    import sbert_nli
    sbert_nli.train(output="runs/x", preset="smoke", train=dataset, max_steps=8, precision="fp32", seed=9)
    model = sbert_nli.load("runs/x")
    model.encode(["A man plays a guitar."])                          # float32 numpy [1, D]
    model.predict("A man plays a guitar.", "Someone makes music.")    # label + probabilities

Heavy libraries (torch, transformers, sentence-transformers) are imported lazily: the API names below
resolve on first use, so ``import sbert_nli``, ``sbert-nli --help`` and input errors answer at once.
"""

__version__ = "0.1.0"

import sys
import types

from sbert_nli.errors import SbertNliError

_API = ("train", "load", "evaluate", "load_nli", "load_sts", "plot_similarity", "plot_training", "Encoder")

__all__ = ["SbertNliError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from sbert_nli import api

        return getattr(api, name)
    raise AttributeError(f"module 'sbert_nli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """Importing a submodule binds it as a package attribute: ``sbert_nli/train.py`` and
    ``sbert_nli/evaluate.py`` would hide the API functions ``sbert_nli.train`` and ``sbert_nli.evaluate``.
    Keep the functions (the submodules stay importable by their full names)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
