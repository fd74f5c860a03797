"""Network topology against the published facts (parameter counts, key names, shapes) and the warp's identity."""

import pytest
import torch

from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.networks.blocks import make_coordinate_grid

# Published parameter counts (upstream speed table / weight file sizes), per network.
PUBLISHED = {
    "appearance_feature_extractor": 836_224,
    "motion_extractor": 28_118_728,
    "warping_module": 45_529_829,
    "spade_generator": 55_365_388,
    "stitching_retargeting_module": 227_263,
}


@pytest.fixture(scope="module")
def full_meta():
    with torch.device("meta"):
        return LivePortraitNetworks(LivePortraitConfig())


def test_default_config_matches_published_parameter_counts(full_meta):
    for role, count in PUBLISHED.items():
        assert sum(p.numel() for p in getattr(full_meta, role).parameters()) == count, role


def test_default_config_has_published_key_names_and_shapes(full_meta):
    shapes = {
        "appearance_feature_extractor": {"first.conv.weight": (64, 3, 3, 3), "second.weight": (512, 256, 1, 1),
                                         "resblocks_3d.3dr5.conv2.weight": (32, 32, 3, 3, 3)},
        "motion_extractor": {"detector.downsample_layers.0.0.weight": (96, 3, 4, 4),
                             "detector.stages.2.8.grn.gamma": (1, 1, 1, 1536), "detector.fc_yaw.weight": (66, 768),
                             "detector.fc_kp.weight": (63, 768), "detector.norm.weight": (768,)},
        "warping_module": {"dense_motion_network.hourglass.decoder.conv.weight": (142, 142, 3, 3, 3),
                           "dense_motion_network.mask.weight": (22, 142, 7, 7, 7),
                           "dense_motion_network.occlusion.weight": (1, 2272, 7, 7),
                           "dense_motion_network.compress.weight": (4, 32, 1, 1, 1),
                           "third.conv.weight": (256, 512, 3, 3), "fourth.weight": (256, 256, 1, 1)},
        "spade_generator": {"fc.weight": (512, 256, 3, 3), "G_middle_5.norm_1.mlp_shared.0.weight": (128, 256, 3, 3),
                            "up_1.conv_s.weight": (64, 256, 1, 1), "conv_img.0.weight": (12, 64, 3, 3)},
        "stitching_retargeting_module": {"stitching.mlp.0.weight": (128, 126), "stitching.mlp.6.weight": (65, 64),
                                         "lip.mlp.0.weight": (128, 65), "eye.mlp.10.weight": (63, 64)},
    }
    for role, expected in shapes.items():
        sd = getattr(full_meta, role).state_dict()
        for key, shape in expected.items():
            assert tuple(sd[key].shape) == shape, (role, key)
    assert "up_1.conv_s.bias" not in full_meta.spade_generator.state_dict()


def test_tiny_shapes_follow_the_published_pipeline():
    cfg = LivePortraitConfig.tiny()
    nets = LivePortraitNetworks.from_config(cfg)
    x = torch.rand(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        f = nets.appearance_feature_extractor(x)
        assert f.shape == (2, cfg.appearance.reshape_channel, cfg.appearance.reshape_depth, 16, 16)
        info = nets.motion_extractor.keypoint_info(x)
        assert info["kp"].shape == (2, cfg.num_kp, 3) and info["yaw"].shape == (2,)
        kp = torch.rand(2, cfg.num_kp, 3) * 2 - 1
        w = nets.warping_module(f, kp, kp)
        assert w["out"].shape == (2, 16, 16, 16) and w["occlusion_map"].shape == (2, 1, 16, 16)
        img = nets.spade_generator(w["out"])
    assert img.shape == (2, 3, cfg.output_size, cfg.output_size) == (2, 3, 128, 128)
    assert 0 <= img.min() and img.max() <= 1


def test_zero_motion_gives_identity_deformation():
    cfg = LivePortraitConfig.tiny()
    nets = LivePortraitNetworks.from_config(cfg)
    f = torch.randn(3, cfg.appearance.reshape_channel, cfg.appearance.reshape_depth, 16, 16)
    kp = torch.rand(3, cfg.num_kp, 3) * 1.6 - 0.8
    with torch.no_grad():
        out = nets.warping_module(f, kp, kp)
    grid = make_coordinate_grid((cfg.appearance.reshape_depth, 16, 16), f)
    assert torch.allclose(out["deformation"], grid.expand_as(out["deformation"]), atol=1e-6)


def test_invalid_config_names_the_violated_constraint():
    cfg = LivePortraitConfig.tiny()
    cfg.warping.reshape_channel = 4
    with pytest.raises(ValueError, match="warping.reshape_channel"):
        cfg.validate()


def test_config_json_round_trip(tmp_path):
    cfg = LivePortraitConfig.tiny()
    cfg.save(tmp_path / "c.json")
    assert LivePortraitConfig.load(tmp_path / "c.json") == cfg
