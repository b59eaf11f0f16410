"""The digits source reads scikit-learn's bundled csv itself: the same arrays as `load_digits`, without the import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kdforge.data.sources.digits import _digits_arrays


def test_digits_arrays_equal_sklearns_load_digits():
    datasets = pytest.importorskip("sklearn.datasets", reason="the digits extra (scikit-learn) is not installed")
    images, target = _digits_arrays()
    digits = datasets.load_digits()
    assert images.dtype == digits.images.dtype and target.dtype == digits.target.dtype
    np.testing.assert_array_equal(images, digits.images)
    np.testing.assert_array_equal(target, digits.target)


def test_loading_digits_does_not_import_sklearn():
    pytest.importorskip("sklearn", reason="the digits extra (scikit-learn) is not installed")
    code = ("import sys; from kdforge.data.sources.digits import _digits_arrays; _digits_arrays(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
