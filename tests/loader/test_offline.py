"""One reading of HF_HUB_OFFLINE for the project, with huggingface_hub's own truthy values, read at call time."""

import pytest
from huggingface_hub import constants

from thermvision_db.io.offline import hub_offline


@pytest.mark.parametrize("value", sorted(constants.ENV_VARS_TRUE_VALUES) + ["on", "yes", " true "])
def test_truthy_values_mean_offline(monkeypatch, value):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline()


@pytest.mark.parametrize("value", ["0", "false", "", "no", "off"])
def test_other_values_mean_online_whatever_was_read_at_import(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not hub_offline()


@pytest.mark.parametrize("at_import", [True, False])
def test_unset_keeps_huggingface_hubs_reading(monkeypatch, at_import):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", at_import)
    assert hub_offline() is at_import
