"""Classic `datasets` builder script for datasets < 4 (and Hub repos that still carry a script).

    datasets.load_dataset("thermvision_db.py", "frames", data_dir=..., trust_remote_code=True)

datasets >= 4 no longer runs scripts: use `from thermvision_db import load_dataset` instead, which takes the
same arguments. This file is a thin entry over the installed package, so both paths read identical rows.
"""

from thermvision_db.hf.builder import ThermVisionConfig, ThermVisionDB


class ThermvisionDb(ThermVisionDB):
    """The package's builder, defined here so `datasets` < 4 finds it in the script module."""

    BUILDER_CONFIG_CLASS = ThermVisionConfig
