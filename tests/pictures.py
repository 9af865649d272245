"""A check shared by the picture tests: the PNG exists, has a sensible size and is not blank."""

from __future__ import annotations


def assert_picture(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 250 and image.shape[1] >= 350, image.shape
    assert float(image[..., :3].std()) > 0.05  # not blank
    return image
