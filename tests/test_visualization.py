"""Overlays and collages."""
import numpy as np

from part_d2.utils.visualization import collage, draw_parts, part_colors, write_png


def test_draw_parts_colours_each_part_and_handles_none(tmp_path):
    img = np.full((20, 30, 3), 100, np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, :10] = True
    masks[1, 10:] = True
    out = draw_parts(img, masks, scores=[0.9, 0.5], object_mask=masks.any(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[5, 15] != out[15, 15]).any()  # two parts, two colours
    assert (draw_parts(img, masks[:0]) == img).all()  # nothing to draw
    assert part_colors(0).shape == (0, 3)
    write_png(str(tmp_path / "x.png"), out)
    assert (tmp_path / "x.png").stat().st_size > 0


def test_collage_grid():
    tiles = [np.full((10, 20, 3), i * 40, np.uint8) for i in range(5)]
    grid = collage(tiles, cols=3, cell=16, pad=2)
    # 2:1 tiles: cells 16 tall and 32 wide, each tile scaled by 1.6 to fill its cell
    assert grid.shape == (2 * 18 + 2, 3 * 34 + 2, 3)
    assert (grid[2 + 15, 2 + 31] == 0).all() and (grid[2 + 18 + 15, 2 + 34 + 31] == 160).all()
    assert (grid[2 + 18 + 15, 2 + 2 * 34] == 255).all()  # the sixth cell is empty


def test_collage_square_cells_for_tall_images_and_bounded_width_for_strips():
    tall = [np.zeros((20, 10, 3), np.uint8)]
    assert collage(tall, cols=2, cell=16, pad=2).shape == (18 + 2, 2 * 18 + 2, 3)
    strip = np.zeros((2, 100, 3), np.uint8)  # 50:1, the cell stops at 3:1 and the strip fits its width
    grid = collage([strip], cols=1, cell=16, pad=2)
    assert grid.shape == (18 + 2, 48 + 2 + 2, 3)
    assert (grid[2, 2 + 47] == 0).all() and (grid[2 + 5, 2] == 255).all()
