"""mmcl_lab: continual learning across modalities, aligned to text, task by task."""

import os

__version__ = "0.1.0"

# cuBLAS reads this when its first handle is made (feature extraction may come before any run): deterministic CUDA
# runs (train.deterministic) need it; the CPU path ignores it.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# The plug-in folders first: importing them fills the registries that configs are checked against.
from . import modalities, data, encoders, backbones, methods  # noqa: F401,E402
from . import compare  # noqa: F401,E402
from .backbones import build_backbone  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402
from .registry import BACKBONES, DATASETS, ENCODERS, METHODS, MODALITIES  # noqa: E402
from .run import Run, resume, run_dir_for, run_stream  # noqa: E402
from .streams import Task, TaskStream, build_stream  # noqa: E402

__all__ = ["RunConfig", "load_config", "BACKBONES", "DATASETS", "ENCODERS", "METHODS", "MODALITIES", "Run", "resume",
           "run_dir_for", "run_stream", "Task", "TaskStream", "build_backbone", "build_stream", "__version__"]
