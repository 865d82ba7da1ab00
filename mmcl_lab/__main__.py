"""python -m mmcl_lab == mmcl-lab."""

import sys

from .cli import main

sys.exit(main())
