"""Whether the Hub may be reached: one reading of HF_HUB_OFFLINE for the whole project.

huggingface_hub reads the variable once, at import (`constants.HF_HUB_OFFLINE`). Here it is read when asked, with
the truthy values huggingface_hub accepts ("1", "ON", "YES", "TRUE"), so a value set later is honoured; when the
variable is unset, huggingface_hub's own reading stands.
"""

from __future__ import annotations

import os


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as it is set now (huggingface_hub's reading at import when unset)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in constants.ENV_VARS_TRUE_VALUES
