"""Outputs of fixed small fits stay what they were recorded as (``golden.py``).

A change of behaviour that is meant is recorded anew, in a commit of its own
that says why. On another torch, numpy or scikit-learn version, or another
CPU instruction set, float32 training rounds differently and the fits
drift apart over epochs, so the comparison is skipped there (record anew).
"""

import numpy as np
import pytest

from golden import PATH, fingerprint, golden_outputs


def test_outputs_are_the_recorded_ones():
    recorded = np.load(PATH)
    if str(recorded["fingerprint"]) != fingerprint():
        pytest.skip(f"recorded on {recorded['fingerprint']}, this is {fingerprint()}")
    outputs = golden_outputs()
    assert sorted(outputs) == sorted(name for name in recorded.files if name != "fingerprint")
    for name, value in outputs.items():
        np.testing.assert_allclose(value, recorded[name], rtol=1e-12, atol=1e-12, err_msg=name)
