"""The visual-words view of DAT: arrays, the code-change map and the command line on a saved smoke run."""
import os

import jax
import numpy as np

from configs import digits_dat
from robust_jax.tools import visual_words
from saved_runs import save_initial_state


def test_change_map_tints_exactly_the_flipped_cells():
    images = np.full((1, 4, 4, 1), 0.5, np.float32)
    flipped = np.array([[[True, False], [False, False]]])
    out = visual_words.change_map(images, flipped)
    assert out.shape == (1, 4, 4, 3)
    red = out[0, :2, :2]
    assert np.all(red[..., 0] == 1.0) and np.all(red[..., 1] < 0.5)
    np.testing.assert_allclose(out[0, 2:, 2:], out[0, 2:, 2:, :1].repeat(3, -1))  # grey elsewhere


def test_command_line_on_a_saved_dat_run(tmp_path, capsys):
    workdir = str(tmp_path / "dat")
    save_initial_state(digits_dat.get_config("smoke"), workdir)
    out = str(tmp_path / "vw.png")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert visual_words.main(["--config", os.path.join(root, "configs", "digits_dat.py:smoke"), "--workdir",
                              workdir, "--num", "4", "--output", out]) == 0
    assert os.path.getsize(out) > 1000
    printed = capsys.readouterr().out
    assert "codes flipped by the attack" in printed and "adversarial vs Q(image)" in printed
    assert visual_words.main(["--config", os.path.join(root, "configs", "digits_dat.py:smoke,standard"),
                              "--workdir", workdir]) == 2  # not a DAT config


def test_arrays_are_consistent(tmp_path):
    from robust_jax import methods, models

    config = digits_dat.get_config("smoke")
    model = models.get("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,))
    variables = model.init(jax.random.key(0), np.zeros((1, 16, 16, 1), np.float32), train=False)
    method = methods.get(config.method, model, 10)
    x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 1))
    r = visual_words.visual_words(method, variables["params"], {"batch_stats": variables["batch_stats"]}, x,
                                  np.array([0, 1, 2]), jax.random.key(2))
    assert r["codes"].shape == r["adversarial_codes"].shape == r["flipped"].shape == (3, 8, 8)
    np.testing.assert_array_equal(r["flipped"], r["codes"] != r["adversarial_codes"])
    assert r["adversarial"].shape == x.shape and set(r["predictions"]) == {"image", "reconstruction", "adversarial"}
    path = visual_words.plot(r, str(tmp_path / "grid.png"))
    assert os.path.getsize(path) > 1000
