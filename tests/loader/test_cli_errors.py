"""The command line's own errors: one line saying what to do, naming the option; usage of the right subcommand."""

from __future__ import annotations

import argparse

import pytest
from PIL import Image

from thermvision_db.cli.main import build_parser, main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_evaluate_names_the_option_of_a_missing_path(mini, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    base = ["evaluate", str(mini.root), "--out", str(tmp_path / "report")]
    cases = {"--compare": [str(missing)], "--real-dir": [str(missing)], "--embedding": [str(missing / "e.onnx")],
             "--fid-features": [str(missing / "f.onnx")], "--inception-weights": [str(missing / "w.pth")]}
    for option, value in cases.items():
        assert main(base + [option, *value]) == 2
        line = _one_error_line(capsys)
        assert option in line and str(missing) in line, line
        if option == "--fid-features":
            assert "embedding" not in line  # the FID extractor is not the identity model
        if option == "--real-dir":
            assert "no images" not in line  # a folder that is not there is not an empty folder
    assert main(["evaluate", str(missing), "--out", str(tmp_path / "report")]) == 2
    assert "DATA_DIR" in _one_error_line(capsys)
    assert not (tmp_path / "report").exists()  # checked before anything is read or written


def test_evaluate_python_api_names_the_argument(mini, tmp_path):
    from generator.evaluate.frames import EvaluationError
    from generator.evaluate.report import evaluate

    with pytest.raises(EvaluationError, match=r"real-image folder .* \(real_dir, --real-dir\) does not exist"):
        evaluate(mini.root, tmp_path / "r", real_dir=tmp_path / "nowhere", progress=False)
    with pytest.raises(EvaluationError, match=r"FID/KID feature model .*--fid-features\) does not exist"):
        evaluate(mini.root, tmp_path / "r", real_dir=mini.root, fid_features=str(tmp_path / "f.onnx"), progress=False)
    with pytest.raises(EvaluationError, match=r"reference corpus folder .*--compare\) does not exist"):
        evaluate(mini.root, tmp_path / "r", compare_dir=tmp_path / "nowhere", progress=False)


def test_missing_weights_folder_is_one_line_before_any_work(tmp_path, capsys):
    still = tmp_path / "still.png"
    Image.new("RGB", (64, 64)).save(still)
    missing = tmp_path / "no-weights"
    assert main(["generate", "--stage", "animate", "--source", str(still), "--liveportrait-dir", str(missing),
                 "--out", str(tmp_path / "anim")]) == 2
    assert f"--liveportrait-dir {missing} is not a folder" in _one_error_line(capsys)
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"")
    assert main(["generate", "-n", "1", "--preset", "thermvision", "--lora", str(lora), "--liveportrait-dir",
                 str(missing), "--out", str(tmp_path / "corpus")]) == 2
    assert "--liveportrait-dir" in _one_error_line(capsys)
    assert not (tmp_path / "corpus").exists()  # refused before the stills were made
    assert main(["generate", "--stage", "animate", "--source", str(tmp_path / "none.png")]) == 2
    assert "--source" in _one_error_line(capsys)


def test_demo_out_pointing_at_a_file(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["demo", "--out", str(a_file)]) == 2
    assert "demo --out" in _one_error_line(capsys) and a_file.read_text() == "x"
    assert main(["demo", "--out", str(a_file / "below")]) == 2
    assert "is a file" in _one_error_line(capsys)


@pytest.mark.parametrize("command", [["export", "MINI", "--format", "coco", "--out", "OUT"],
                                     ["evaluate", "MINI", "--out", "OUT"]])
def test_unknown_config_is_a_usage_error_of_that_subcommand(command, mini, tmp_path, capsys):
    argv = [str(mini.root) if a == "MINI" else str(tmp_path / "o") if a == "OUT" else a for a in command]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--config", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: thermvision-db {command[0]} ") and "Traceback" not in err
    assert "argument --config: invalid choice: 'bogus'" in err


def test_option_typo_shows_the_subcommand_usage_and_the_closest_option(mini, capsys):
    with pytest.raises(SystemExit):
        main(["preview", str(mini.root), "--tiles", "50"])
    err = capsys.readouterr().err
    assert err.startswith("usage: thermvision-db preview ")
    assert "unrecognized arguments: --tiles 50" in err and "did you mean --tile?" in err


def _subcommands(parser: argparse.ArgumentParser):
    yield "thermvision-db", parser
    for name, sub in parser.commands.items():
        yield f"thermvision-db {name}", sub


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    for name, sub in _subcommands(parser):
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            if action.option_strings and action.default not in (None, False, "", argparse.SUPPRESS):
                assert f"(default: {action.default})" in text or f"default {action.default}" in text, where
    demo = " ".join(parser.commands["demo"].format_help().split())
    assert "(default: thermvision_demo)" in demo
    preview = " ".join(parser.commands["preview"].format_help().split())
    assert "(default: 160)" in preview and "(default: 15.0)" in preview
    generate = " ".join(parser.commands["generate"].format_help().split())
    assert "(default: tiny)" in generate and "(default: thermvision_generated)" in generate


def test_inception_file_named_in_help_is_the_one_realism_loads():
    from generator.cli.evaluate import INCEPTION_FILE as in_help
    from generator.evaluate.realism import INCEPTION_FILE

    assert in_help == INCEPTION_FILE


def test_push_to_hub_failure_says_hf_auth_login(tmp_path, monkeypatch):
    """The Hub refuses (huggingface_hub in offline mode, so nothing leaves the machine): the hint is today's command."""
    import huggingface_hub.constants

    from thermvision_db.tools.export import ExportError, push_to_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # past the project's own offline check ...
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # ... the library refuses the request
    (tmp_path / "data.yaml").write_text("names: [face]\n")
    with pytest.raises(ExportError) as info:
        push_to_hub(tmp_path, "me/repo")
    message = str(info.value)
    assert "\n" not in message and "`hf auth login`" in message and "huggingface-cli" not in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match=r"upload it later with `hf upload me/repo "):
        push_to_hub(tmp_path, "me/repo")
