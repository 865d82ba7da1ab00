"""Raw datasets, one file per source, registered by name (base.py holds the contract): the bundled benchmark's
generators, the pretraining corpus, and `folder:` for your own files."""

from .base import RawData, load_raw, register_dataset, split_indices

from . import corpus, folder, mnist, shapes, speech  # noqa: E402,F401  (registration)

__all__ = ["RawData", "load_raw", "register_dataset", "split_indices"]
