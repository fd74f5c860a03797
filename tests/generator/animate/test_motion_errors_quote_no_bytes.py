"""Errors about motion, library and weight files quote no bytes of the file (docs/generator-hostile-inputs.md,
'Motion'): a user's path may be a link to a key or a password file, and an error echoing its bytes (as text, as a
number, as hex) would print the secret. Property test: a planted secret in every place a reader looks."""

from __future__ import annotations

import pickle
import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.animate.motion.library import ExpressionLibrary
from generator.animate.motion.templates import load_lip_array, load_motion
from generator.weights import check_safetensors
from thermvision_db.errors import ThermVisionError

SECRETS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=10, max_size=24).filter(
    lambda s: s.split(".")[0] not in sys.stdlib_module_names)


def _frame(secret: str | None = None, field: str = "R") -> dict:
    frame = {"R": np.eye(3, dtype=np.float32), "exp": np.zeros((6, 3), np.float32),
             "scale": np.ones(1, np.float32), "t": np.zeros(3, np.float32)}
    if secret is not None:
        frame[field] = secret
    return frame


def _files(secret: str) -> dict[str, bytes]:
    """name -> contents; each puts the secret where a reader parses or reports something."""
    raw = secret.encode()
    return {
        "raw.pkl": raw + b"\n" + raw + b"\n",
        "global.pkl": b"c" + raw + b"\n" + raw + b"\n.",  # GLOBAL opcode: module and name lines from the file
        "text_fps.pkl": pickle.dumps({"motion": [_frame()], "output_fps": secret}),
        "text_frames.pkl": pickle.dumps({"motion": [_frame()], "n_frames": secret}),
        "text_rotation.pkl": pickle.dumps({"motion": [_frame(secret, "R")]}),
        "text_landmarks.pkl": pickle.dumps([[_frame()], [secret]]),
        "text_eyes.pkl": pickle.dumps({"motion": [_frame()], "c_eyes_lst": [secret]}),
        "raw.npz": raw * 4,
        "zipped_text.npz": _npz_with_text(secret),
        "raw.safetensors": raw * 4,  # its first 8 bytes read as the header length
        "json_header.safetensors": struct.pack("<Q", len(raw) + 2) + b'"' + raw + b'"',
    }


def _npz_with_text(secret: str) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, R=np.array([secret]))
    return buffer.getvalue()


def _forms(secret: str) -> list[str]:
    raw = secret.encode().ljust(8, b"\0")
    number = int.from_bytes(raw[:8], "little")
    return [secret, secret[:8], f"{number}", f"{number:,}", raw[:8].hex(), repr(raw[:8])[2:-1]]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=SECRETS)
def test_no_motion_reader_quotes_the_file(tmp_path_factory, secret):
    folder = tmp_path_factory.mktemp("secret")
    for name, data in _files(secret).items():
        path = folder / name
        path.write_bytes(data)
        readers = [load_motion, lambda p: ExpressionLibrary.load({"smile": [p]})]
        if path.suffix == ".pkl":
            readers.append(load_lip_array)
        if path.suffix == ".safetensors":
            readers.append(lambda p: check_safetensors(p, what="LoRA"))
        for read in readers:
            with pytest.raises(ThermVisionError) as err:
                read(path)
            message = str(err.value)
            assert str(path) in message, message  # the error names the file ...
            shown = message.replace(str(path), "<file>")
            for form in _forms(secret):  # ... and never its bytes
                assert form not in shown, (name, message)
