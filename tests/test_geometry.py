"""a4g.geometry: the token grid extraction stores is the patch grid the V-DiT builds."""

from __future__ import annotations

import pytest

from a4g.errors import ConfigError
from a4g.geometry import PATCH_SIZE, token_grid_for
from a4g.train.model import create_model


@pytest.mark.parametrize("size, downsample", [(256, 8), (32, 8), (512, 8), (64, 16)])
def test_token_grid_is_the_latent_grid_over_the_patch(size, downsample):
    side = size // downsample // PATCH_SIZE
    assert token_grid_for(size, downsample) == (side, side)


def test_sizes_that_do_not_split_into_patches_are_refused():
    with pytest.raises(ConfigError, match=f"--size 250 must be a multiple of {8 * PATCH_SIZE}"):
        token_grid_for(250, 8)


def test_the_models_patch_grid_is_the_stores_token_grid():
    model = create_model("VDiT-tiny", input_size=256 // 8, in_channels=4, num_frames=2, num_classes=0)
    assert model.grid_size == token_grid_for(256, 8)
