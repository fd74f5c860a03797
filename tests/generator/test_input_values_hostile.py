"""CLI and Python values refused up front with one line (docs/generator-hostile-inputs.md, 'CLI values')."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.corpus.settings import GenerationSettings, SettingsError, check_seed
from generator.corpus.workers import MAX_IDENTITIES, check_identity_count
from generator.stills.prompts import (
    MAX_PROMPT_CHARS,
    TEMPLATE_FIELDS,
    check_template,
    render_prompt,
    sample_attributes,
)
from thermvision_db.errors import InputError


@pytest.mark.parametrize("value", [2.5, "3", True, None, 0, -1, 10**12, MAX_IDENTITIES + 1])
def test_identity_counts_out_of_range_or_not_integers_are_refused(value):
    with pytest.raises(InputError, match="num_identities must be"):
        check_identity_count(value)


def test_identity_counts_in_range_pass_as_int():
    assert check_identity_count(np.int64(3)) == 3 and type(check_identity_count(np.int64(3))) is int
    assert check_identity_count(MAX_IDENTITIES) == MAX_IDENTITIES


@pytest.mark.parametrize("seed", [2**70, 2**63, -1, 1.5, "7", True])
def test_seeds_outside_int64_are_refused_before_any_work(seed):
    with pytest.raises(SettingsError, match="seed must be"):
        GenerationSettings(seed=seed)


def test_the_largest_seed_is_accepted():
    assert check_seed(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize("template", ["{person:>1000000000}", "{person!r}", "{person:{glasses}}", "{person.upper}",
                                      "{person[0]}", "x" * 2001, "{0}", "{}"])
def test_templates_with_specs_access_or_unbounded_length_are_refused(template):
    with pytest.raises(InputError, match="prompt template"):
        check_template(template)
    with pytest.raises(InputError):
        GenerationSettings(prompt_template=template)


@given(st.lists(st.one_of(st.sampled_from(TEMPLATE_FIELDS), st.text(alphabet="ab ,.", max_size=5)), max_size=40),
       st.integers(0, 10**6))
def test_accepted_templates_render_within_the_bound(parts, index):
    template = "".join("{" + p + "}" if p in TEMPLATE_FIELDS else p for p in parts)[:2000]
    try:
        check_template(template)
    except InputError:
        return  # cut inside a field by the slice
    assert len(render_prompt(sample_attributes(0, index), template)) <= MAX_PROMPT_CHARS


@pytest.mark.parametrize("args", [["-n", str(10**12)], ["--seed", str(2**70)], ["-n", "0"],
                                  ["--stage", "stills", "--prompt-template", "{person:>1000000000}"],
                                  ["--stage", "stills", "--noise-seed", str(2**64)]])
def test_the_cli_prints_one_line_and_rc_2(args, tmp_path, capsys):
    from thermvision_db.cli.main import main

    assert main(["generate", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize("count", [2.5, True, 0, 10**12, "3"])
def test_load_dataset_refuses_bad_identity_counts_before_any_work(tmp_path, count):
    """`load_dataset(..., num_identities=...)` says what is wrong in one line before datasets lists identity names
    (10**12 of them would be a MemoryError) and before any folder is made."""
    from thermvision_db import load_dataset
    from thermvision_db.errors import InputError

    with pytest.raises(InputError, match="num_identities must be"):
        load_dataset("thermvision_db", "synthetic", num_identities=count, cache_dir=str(tmp_path / "cache"),
                     output_dir=str(tmp_path / "corpus"))
    assert not (tmp_path / "corpus").exists()
