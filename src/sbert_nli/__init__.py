"""sbert-nli: fine-tune SBERT sentence encoders on NLI, evaluate and compare them.

Heavy libraries (torch, transformers, sentence-transformers) are imported lazily by the modules
that need them, so ``sbert-nli --help`` and input errors answer at once.
"""

__version__ = "0.1.0"

from sbert_nli.errors import SbertNliError

__all__ = ["SbertNliError", "__version__"]
