"""mmcl_lab: continual learning across modalities, aligned to text, task by task."""

__version__ = "0.1.0"

from . import compare, data, encoders, methods  # noqa: F401,E402  (fills the registries)
from .config import RunConfig, load_config  # noqa: E402
from .registry import DATASETS, ENCODERS, METHODS  # noqa: E402
from .run import Run, resume, run_dir_for, run_stream  # noqa: E402
from .streams import Task, TaskStream, build_stream  # noqa: E402

__all__ = ["RunConfig", "load_config", "DATASETS", "ENCODERS", "METHODS", "Run", "resume", "run_dir_for", "run_stream",
           "Task", "TaskStream", "build_stream", "__version__"]
