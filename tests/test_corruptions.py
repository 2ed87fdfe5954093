"""Corruptions of datasets/corruptions.py: repeatable, severity 0 the identity, stronger with
severity, and bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.cityscapes import find_samples, read_image
from datasets.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_seed


@pytest.fixture(scope="module")
def image(synthetic_root):
    return read_image(find_samples(synthetic_root, "val")[0].image)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_repeatable_with_a_seed_and_identity_at_severity_0(image, name):
    assert corrupt(image, name, 0, 1) is image
    for severity in SEVERITIES:
        a, b = corrupt(image, name, severity, 3), corrupt(image, name, severity, 3)
        assert a.dtype == np.uint8 and a.shape == image.shape
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, image), (name, severity)


@pytest.mark.parametrize("name", ["fog", "rain", "snow", "shadow", "gaussian_noise", "jpeg"])
def test_stronger_with_severity(image, name):
    changes = [np.abs(corrupt(image, name, s, 3).astype(int) - image).mean() for s in SEVERITIES]
    assert changes == sorted(changes) and changes[-1] > changes[0], changes


def test_random_corruptions_differ_between_seeds(image):
    for name in ("rain", "gaussian_noise", "shadow"):  # snow ("bleach") has no randomness
        assert not np.array_equal(corrupt(image, name, 3, 1), corrupt(image, name, 3, 2)), name


def test_seeds_differ_per_image_corruption_and_severity():
    seeds = {corruption_seed(0, i, n, s) for i in range(3) for n in CORRUPTIONS for s in SEVERITIES}
    assert len(seeds) == 3 * len(CORRUPTIONS) * len(SEVERITIES)
    assert corruption_seed(0, 1, "fog", 2) == corruption_seed(0, 1, "fog", 2)


def test_bad_arguments(image):
    with pytest.raises(ValueError, match="unknown corruption 'smoke'; choose from fog, rain"):
        corrupt(image, "smoke", 1, 0)
    with pytest.raises(ValueError, match="severity must be 0-5, got 6"):
        corrupt(image, "fog", 6, 0)
    with pytest.raises(ValueError, match="H x W x 3 uint8 RGB image, got float32"):
        corrupt(image.astype(np.float32), "fog", 1, 0)


def test_scoring_refuses_unknown_corruptions_and_severities_outside_1_to_5():
    from inference.scoring import check_corruptions

    check_corruptions(["fog", "jpeg"], [1, 5])
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match="corruption severities are 1-5"):
            check_corruptions(["fog"], [severity])
    with pytest.raises(ValueError, match="unknown corruption 'smoke'"):
        check_corruptions(["smoke"], [1])


def test_corruption_names_stay_light():
    """evaluate.py's --help lists the names without importing numpy through this module."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, datasets.corruptions; print('numpy' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr
