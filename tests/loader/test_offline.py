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


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline", [False, True])
def test_an_unreachable_hub_points_at_a_local_copy(monkeypatch, tmp_path, offline):
    """No data_dir, no THERMVISION_DB_DIR, no Hub (offline flag, or a network that does not answer): the error says
    how to name a local copy, whichever way the Hub failed."""
    import thermvision_db.sources.hub as hub
    from thermvision_db import load_dataset
    from thermvision_db.sources.base import SourceError

    monkeypatch.delenv("THERMVISION_DB_DIR", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hub, "hub_source", lambda: f"http://127.0.0.1:{_closed_port()}/ThermVision-DB")
    with pytest.raises(SourceError) as err:
        load_dataset("thermvision_db", "frames", cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert "data_dir=" in message and "THERMVISION_DB_DIR" in message and "thermvision-db miniature" in message


def test_a_given_unreachable_url_is_named_without_the_hub_hint(monkeypatch, tmp_path):
    from thermvision_db import load_dataset
    from thermvision_db.sources.base import SourceError

    url = f"http://127.0.0.1:{_closed_port()}/copy"
    with pytest.raises(SourceError) as err:
        load_dataset("thermvision_db", "frames", data_dir=url, cache_dir=str(tmp_path / "cache"))
    assert url in str(err.value) and "Hub copy was tried" not in str(err.value)
