"""The public training entry point: ``sbert_nli.train.train(config, output)``.

The native engine lives in :mod:`sbert_nli.engines.native` (setup, the loop, its hooks); this module
keeps the names users and tests import from here."""

from sbert_nli.engines.native import Objective, lr_factor, make_batch, param_groups, train

__all__ = ["Objective", "lr_factor", "make_batch", "param_groups", "train"]
