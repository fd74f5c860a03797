"""Weight resolution (local / Hub, offline errors), sha256 with its cache, and the safetensors-only rule."""

import hashlib
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from generator import weights
from generator.weights import HashCache, UnsafeWeightsError, WeightsNotFoundError, check_safetensors, hash_weights, is_hub_id, resolve_weights, sha256_file, state_dict_sha256


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_CACHE", str(tmp_path / "cache"))


def test_local_file_and_folder_resolve_to_themselves(tmp_path):
    f = tmp_path / "a.safetensors"
    f.write_bytes(b"x")
    assert resolve_weights(str(f), what="X", hint="--x PATH") == f.resolve()
    assert resolve_weights(tmp_path, what="X", hint="--x PATH") == tmp_path.resolve()


def test_missing_local_path_names_the_option(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"LoRA weights not found at .*missing.*pass --lora FILE"):
        resolve_weights(str(tmp_path / "missing.safetensors"), what="LoRA", hint="--lora FILE")
    with pytest.raises(WeightsNotFoundError, match="no LoRA weights given: pass --lora FILE"):
        resolve_weights(None, what="LoRA", hint="--lora FILE")


def test_hub_id_offline_gives_a_clear_error_naming_what_to_pass(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("black-forest-labs/FLUX.1-dev", what="FLUX.1-dev", hint="--flux /path/to/FLUX.1-dev")
    message = str(info.value)
    assert "black-forest-labs/FLUX.1-dev" in message and "--flux /path/to/FLUX.1-dev" in message
    assert "HF_HUB_OFFLINE" in message
    with pytest.raises(WeightsNotFoundError, match="--lora"):
        resolve_weights("org/repo/sub/lora.safetensors", what="LoRA", hint="--lora FILE")


def test_hub_id_recognition():
    assert is_hub_id("black-forest-labs/FLUX.1-dev")
    assert is_hub_id("org/repo/dir/file.safetensors")
    assert not is_hub_id("./relative/path")
    assert not is_hub_id("/abs/path")
    assert not is_hub_id("single")
    assert not is_hub_id("org//x")


def test_sha256_matches_hashlib_and_folders_list_weight_files_only(tmp_path):
    data = os.urandom(3000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(data)
    (tmp_path / "config.json").write_text("{}")
    assert sha256_file(tmp_path / "sub" / "w.safetensors") == hashlib.sha256(data).hexdigest()
    assert hash_weights(tmp_path) == {str(tmp_path / "sub" / "w.safetensors"): hashlib.sha256(data).hexdigest()}


def test_hash_cache_hashes_once_and_again_after_a_change(tmp_path, monkeypatch):
    calls = []
    real = weights.sha256_uncached
    monkeypatch.setattr(weights, "sha256_uncached", lambda p: calls.append(p) or real(p))
    f = tmp_path / "big.safetensors"
    f.write_bytes(b"first")
    cache = HashCache(tmp_path / "hashes.json")
    assert cache.sha256(f) == hashlib.sha256(b"first").hexdigest()
    assert cache.sha256(f) == hashlib.sha256(b"first").hexdigest()
    assert HashCache(tmp_path / "hashes.json").sha256(f) == hashlib.sha256(b"first").hexdigest()  # from disk
    assert len(calls) == 1
    f.write_bytes(b"second, longer")
    assert cache.sha256(f) == hashlib.sha256(b"second, longer").hexdigest()
    assert len(calls) == 2


def test_pickle_files_are_refused_without_being_loaded(tmp_path, monkeypatch):
    trap = tmp_path / "lora.pt"
    trap.write_bytes(pickle.dumps({"w": 1}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(UnsafeWeightsError, match=r"lora\.pt is not a \.safetensors file"):
        check_safetensors(trap, what="LoRA")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(UnsafeWeightsError, match="not a valid safetensors file"):
        check_safetensors(fake, what="LoRA")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        check_safetensors(tmp_path / "absent.safetensors")


def test_valid_safetensors_passes_and_returns_its_metadata(tmp_path):
    f = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(2)}, str(f), metadata={"ss_network_module": "networks.lora_flux"})
    assert check_safetensors(f) == {"ss_network_module": "networks.lora_flux"}


def test_state_dict_hash_tracks_weights_not_identity():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b.bias[0] += 1e-3
    assert state_dict_sha256(a) != state_dict_sha256(b)
