"""Public name `thermvision_db.video` (video decoding): the same module object as `thermvision_db.io.decode`."""

import sys

from thermvision_db.io import decode as _module

sys.modules[__name__] = _module
