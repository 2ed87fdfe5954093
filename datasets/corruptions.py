"""Weather and sensor corruptions of validation images, at severities 1-5, repeatable by seed.

The robustness benchmark of Kamann and Rother ("Benchmarking the Robustness of Semantic
Segmentation Models", CVPR 2020: Cityscapes-C) evaluates on validation images corrupted at five
severities and reports each corruption's mIoU, their mean, and the mean relative to the clean
mIoU. Here the corruptions are albumentations' transforms with fixed parameters per severity:
the weather of a road or a track (fog, rain, snow, sun flare, shadow) and the sensor faults of
ImageNet-C (Hendrycks and Dietterich, ICLR 2019), whose severity ladders the noise, JPEG,
brightness and contrast parameters follow:

- gaussian_noise: standard deviation 0.08, 0.12, 0.18, 0.26, 0.38 of the value range;
- jpeg: quality 25, 18, 15, 10, 7;
- brightness_contrast: brightness +0.1 ... +0.5 of the range and contrast x0.4 ... x0.05
  (ImageNet-C's brightness and contrast ladders in one corruption);
- motion_blur: kernels of 7, 11, 15, 21 and 27 pixels at 1024x2048 (scaled with the width, at
  least 3, 5, 7, 9 and 11);
- fog, rain, snow, sun_flare, shadow: albumentations' weather, their strength raised in five
  steps (fog coefficient, rain type and darkening, snow share, flare radius and circles,
  number and darkness of shadows).

Severity 0 is the clean image. `corrupt(image, name, severity, seed)` gives the same image for
the same arguments on any machine with the pinned albumentations.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from utils.errors import BadInput

if TYPE_CHECKING:  # numpy on first use: the names and severities stay light for --help
    import numpy as np

# albumentations asks PyPI for a newer version at import unless told not to: no network calls
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "corruption_seed"]

SEVERITIES = (1, 2, 3, 4, 5)
_REFERENCE_WIDTH = 2048  # the sizes in pixels below are for full-resolution Cityscapes


def _fog(s: int, width: int) -> Any:
    import albumentations as A

    coef = (0.2, 0.35, 0.5, 0.65, 0.8)[s - 1]
    return A.RandomFog(fog_coef_range=(coef, coef), alpha_coef=0.08, p=1.0)


def _rain(s: int, width: int) -> Any:
    import albumentations as A

    kind = ("drizzle", "default", "heavy", "torrential", "torrential")[s - 1]
    dim = (0.9, 0.8, 0.7, 0.6, 0.5)[s - 1]
    return A.RandomRain(rain_type=kind, brightness_coefficient=dim, p=1.0)


def _snow(s: int, width: int) -> Any:
    import albumentations as A

    share = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    return A.RandomSnow(snow_point_range=(share, share), brightness_coeff=2.5, p=1.0)


def _sun_flare(s: int, width: int) -> Any:
    import albumentations as A

    radius = max(1, int(round((0.1, 0.15, 0.2, 0.25, 0.3)[s - 1] * width)))
    circles = 2 * s + 2
    return A.RandomSunFlare(
        src_radius=radius, num_flare_circles_range=(circles, circles + 2), p=1.0
    )


def _shadow(s: int, width: int) -> Any:
    import albumentations as A

    darkness = (0.3, 0.4, 0.5, 0.6, 0.7)[s - 1]
    return A.RandomShadow(
        shadow_roi=(0, 0.5, 1, 1),
        num_shadows_limit=(s, s),
        shadow_intensity_range=(darkness, darkness),
        p=1.0,
    )


def _gaussian_noise(s: int, width: int) -> Any:
    import albumentations as A

    std = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return A.GaussNoise(std_range=(std, std), per_channel=True, p=1.0)


def _motion_blur(s: int, width: int) -> Any:
    import albumentations as A

    scaled = int(round((7, 11, 15, 21, 27)[s - 1] * width / _REFERENCE_WIDTH))
    size = max(scaled, 1 + 2 * s) | 1  # odd; on small images still one step per severity
    return A.MotionBlur(blur_limit=(size, size), allow_shifted=False, p=1.0)


def _jpeg(s: int, width: int) -> Any:
    import albumentations as A

    quality = (25, 18, 15, 10, 7)[s - 1]
    return A.ImageCompression(compression_type="jpeg", quality_range=(quality, quality), p=1.0)


def _brightness_contrast(s: int, width: int) -> Any:
    import albumentations as A

    brightness = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    contrast = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1] - 1.0  # albumentations: factor - 1
    return A.RandomBrightnessContrast(
        brightness_limit=(brightness, brightness), contrast_limit=(contrast, contrast), p=1.0
    )


#: name -> the albumentations transform of a severity (1-5) for images `width` pixels wide.
CORRUPTIONS: dict[str, Callable[[int, int], Any]] = {
    "fog": _fog,
    "rain": _rain,
    "snow": _snow,
    "sun_flare": _sun_flare,
    "shadow": _shadow,
    "gaussian_noise": _gaussian_noise,
    "motion_blur": _motion_blur,
    "jpeg": _jpeg,
    "brightness_contrast": _brightness_contrast,
}


def corruption_seed(base: int, index: int, name: str, severity: int) -> int:
    """The seed of image `index` under one corruption and severity, from a run's base seed."""
    import numpy as np

    words = [base, index, sorted(CORRUPTIONS).index(name), severity]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """`image` (H, W, 3) uint8 RGB under corruption `name` at `severity` (0: unchanged).

    The same (image, name, severity, seed) always gives the same result. BadInput for an
    unknown name or a severity outside 0-5; ValueError for an image that is not H x W x 3 uint8.
    """
    if name not in CORRUPTIONS:
        raise BadInput(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise BadInput(f"corruption severity must be 0-5, got {severity!r}")
    import numpy as np

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"corrupt takes an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}"
        )
    if severity == 0:
        return image
    import albumentations as A

    transform = A.Compose([CORRUPTIONS[name](severity, image.shape[1])], seed=int(seed))
    return np.ascontiguousarray(transform(image=image)["image"])
