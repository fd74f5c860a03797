"""The gender classifiers: torchvision's parameter counts and names, a state_dict round trip, weights checks."""

import pytest
import torch

from generator.downstream.classifiers import ClassifierWeightsError, build_classifier, model_class, parse_weights

# torchvision.models.<name>() at 1000 classes, as published in torchvision's model tables
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548}
TORCHVISION_KEYS = {  # a few of torchvision's state_dict names, each a different kind of module
    "resnet18": ["conv1.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.num_batches_tracked", "fc.bias"],
    "mobilenet_v2": ["features.0.0.weight", "features.1.conv.0.1.weight", "features.2.conv.3.running_mean",
                     "features.18.1.bias", "classifier.1.weight"],
    "efficientnet_b0": ["features.1.0.block.1.fc1.weight", "features.2.0.block.0.0.weight",
                        "features.6.3.block.3.1.running_var", "features.8.0.weight", "classifier.1.bias"],
}


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMETERS))
def test_parameter_counts_and_names_are_torchvisions(name):
    model = model_class(name)()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMETERS[name]
    assert set(TORCHVISION_KEYS[name]) <= set(model.state_dict())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_imagenet_state_dict_round_trip_replaces_the_head(tmp_path, suffix):
    torch.manual_seed(1)
    imagenet = model_class("mobilenet_v2")()  # stands in for torchvision's 1000-class ImageNet file
    path = tmp_path / f"mobilenet_v2{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(path))
    else:
        torch.save(imagenet.state_dict(), path)
    model, init = build_classifier("mobilenet_v2", 2, path)
    assert "head replaced" in init and model.classifier[1].out_features == 2
    for key, value in imagenet.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(model.state_dict()[key], value), key
    again_path = tmp_path / "two_classes.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(again_path))
    again, init = build_classifier("mobilenet_v2", 2, again_path)
    assert "head replaced" not in init
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_random_initialisation_is_said_and_seeded():
    torch.manual_seed(0)
    a, init = build_classifier("resnet18", 2)
    torch.manual_seed(0)
    b, _ = build_classifier("resnet18", 2)
    assert init == "random initialisation (no ImageNet weights given)"
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_wrong_keys_and_shapes_are_named_in_one_line(tmp_path):
    state = model_class("resnet18")().state_dict()
    state.pop("layer1.0.conv1.weight")
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ClassifierWeightsError) as err:
        build_classifier("resnet18", 2, tmp_path / "bad.pth")
    message = str(err.value)
    assert "\n" not in message
    assert "missing: layer1.0.conv1.weight" in message and "unexpected: extra.weight" in message
    assert "layer2.0.conv1.weight (3, 3) != (128, 64, 3, 3)" in message


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"fc.weight": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(ClassifierWeightsError, match="weights_only=True"):
        build_classifier("resnet18", 2, tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_weights_options(tmp_path):
    (tmp_path / "r.safetensors").write_bytes(b"")
    assert parse_weights([f"resnet18={tmp_path / 'r.safetensors'}"], ["resnet18"]) == {"resnet18": tmp_path / "r.safetensors"}
    for spec, match in [("resnet18", "MODEL=PATH"), ("vgg=x", "unknown model"), (f"mobilenet_v2={tmp_path}/r.safetensors", "not among"),
                        ("resnet18=/no/such.pth", "does not exist")]:
        with pytest.raises(ClassifierWeightsError, match=match):
            parse_weights([spec], ["resnet18"])
    with pytest.raises(ClassifierWeightsError, match="not a readable .safetensors"):
        build_classifier("resnet18", 2, tmp_path / "r.safetensors")
