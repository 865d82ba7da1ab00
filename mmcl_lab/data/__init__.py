"""Raw datasets, one file per source, registered by name (base.py holds the contract): the bundled benchmark's
generators, the pretraining corpus, `folder:` for your own files, and readers of the standard releases in their
official layouts and splits (esc50, ucf101, nyu_depth_v2, sun_rgbd, imagefolder; docs/DATASETS.md)."""

from .base import RawData, load_raw, register_dataset, split_indices, template_for

from . import corpus, folder, mnist, shapes, speech  # noqa: E402,F401  (registration)
from . import esc50, imagefolder, nyu_depth_v2, sun_rgbd, ucf101  # noqa: E402,F401

__all__ = ["RawData", "load_raw", "register_dataset", "split_indices", "template_for"]
