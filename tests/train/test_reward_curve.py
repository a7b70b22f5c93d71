"""The training curves' PNG: drawn once a reward exists, every named series on it."""

from s3ray.train.reward_curve import reward_curve


def test_no_plot_before_the_first_reward(tmp_path):
    assert reward_curve({"reward": [], "genacc": [(1, 0.5)]}, tmp_path / "curve.png") is None
    assert not (tmp_path / "curve.png").exists()


def test_plot_is_a_png_file(tmp_path):
    path = reward_curve({"reward": [(1, 0.1), (2, 0.3)], "dev_gbr": [(2, 0.2)]}, tmp_path / "sub" / "curve.png")
    assert path == tmp_path / "sub" / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
