"""Public name `thermvision_db.torch` (PyTorch helpers): the same module object as `thermvision_db.tools.pytorch`."""

import sys

from thermvision_db.tools import pytorch as _module

sys.modules[__name__] = _module
