"""Hostile pickles built opcode by opcode, the way an attacker writes them: nothing they name may run."""

import pickle
import struct

import numpy as np
import pytest

from generator.animate import motion as motions
from generator.safe_pickle import SAFE_GLOBALS, UnsafePickleError, safe_pickle_load


def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b


def _stack_global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: STACK_GLOBAL(module, name) then REDUCE on a one-string tuple."""
    return (pickle.PROTO + b"\x04" + _str(module) + _str(name) + pickle.STACK_GLOBAL + _str(arg)
            + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


def _eval_via_dotted_name(code: str) -> bytes:
    """The reported exploit: `numpy.dtypes` + `__builtins__.get` reaches `eval`, then calls it on `code`."""
    get = _str("numpy.dtypes") + _str("__builtins__.get") + pickle.STACK_GLOBAL
    fetch_eval = get + _str("eval") + pickle.TUPLE1 + pickle.REDUCE
    return pickle.PROTO + b"\x04" + fetch_eval + _str(code) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP


def _marker_code(marker) -> str:
    return f"open({str(marker)!r}, 'w')"


@pytest.mark.parametrize("build", [
    lambda code: _eval_via_dotted_name(code),
    lambda code: _stack_global_call("builtins", "eval", code),
    lambda code: _stack_global_call("numpy", "core.multiarray.__builtins__.get", code),
    lambda code: _stack_global_call("numpy.dtypes", "Float32DType.__init__.__globals__.get", code),
    lambda code: b"cbuiltins\neval\n(" + pickle.UNICODE + code.encode("raw_unicode_escape") + b"\ntR.",  # proto 0
    lambda code: b"cnumpy.dtypes\n__builtins__.get\n(Veval\ntR(V" + code.encode() + b"\ntR.",
], ids=["dotted-dtypes-builtins", "builtins-eval", "dotted-numpy", "dotted-dtype-class", "proto0-global",
        "proto0-dotted"])
def test_hostile_template_runs_nothing_and_names_the_file(tmp_path, build):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(build(_marker_code(marker)))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused global"):
        motions.load_motion(evil)
    assert not marker.exists()


def test_the_exploit_is_real_without_the_allow_list(tmp_path):
    """The crafted bytes do run code through a plain unpickler, so the test above guards a real attack."""
    marker = tmp_path / "code-ran"
    pickle.loads(_eval_via_dotted_name(_marker_code(marker)))
    assert marker.exists()


def test_allow_list_is_exact_pairs_without_dotted_names():
    assert all("." not in name for _, name in SAFE_GLOBALS)
    with pytest.raises(UnsafePickleError, match="refused global numpy.dtypes.__builtins__"):
        safe_pickle_load(_stack_global_call("numpy.dtypes", "__builtins__", "x"), "t.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_templates_of_every_protocol_still_load(tmp_path, protocol):
    tpl = {"n_frames": 2, "output_fps": 25,
           "motion": [{"R": np.eye(3, dtype=np.float32)[None], "exp": np.full((1, 21, 3), i, np.float32),
                       "scale": np.ones((1, 1), np.float32), "t": np.zeros((1, 3), np.float32)} for i in range(2)]}
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(tpl, protocol=protocol))
    m = motions.load_motion(path)
    assert m.exp.shape == (2, 21, 3) and float(m.exp[1, 0, 0]) == 1.0


def test_truncated_and_garbage_pickles_name_the_file(tmp_path):
    good = pickle.dumps({"motion": [{"R": np.eye(3)}]}, protocol=4)
    for name, data in {"cut.pkl": good[: len(good) // 2], "junk.pkl": b"\x80\x04not a pickle",
                       "ext.pkl": pickle.PROTO + b"\x02" + pickle.EXT1 + struct.pack("<B", 1) + pickle.STOP}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
            motions.load_motion(tmp_path / name)
