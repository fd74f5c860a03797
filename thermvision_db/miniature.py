"""Public name `thermvision_db.miniature` (the miniature corpus writer): the same module object as `thermvision_db.demo.miniature`."""

import sys

from thermvision_db.demo import miniature as _module

sys.modules[__name__] = _module
