"""``gqnbench data generate | info | cache`` end to end on a tiny set, and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gqnbench.cli import main

pytest_plugins = ["conftest_data"]  # fixtures tiny_dataset, dataset_copy


def test_generate_info_cache(tmp_path: Path, capsys):
    out = tmp_path / "data"
    args = ["data", "generate", "--scenes", "5", "--seed", "1", "--out", str(out), "--scenes-per-file", "2"]
    assert main([*args, "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "train          4 scenes in    2 files" in text and "test           1 scenes in    1 files" in text
    assert "scenes/s" in text
    assert main([*args, "--quiet"]) == 2  # exists: refuses without --overwrite
    assert "already exists" in capsys.readouterr().err

    sheet = tmp_path / "sheet.png"
    assert main(["data", "info", str(out), "--sheet", str(sheet), "--num-scenes", "3"]) == 0
    text = capsys.readouterr().out
    assert "frames 64x64x3 JPEG, 15 views a scene" in text and "seed 1" in text
    with Image.open(sheet) as im:
        assert im.size == (2 + 15 * (128 + 2), 2 + 3 * (128 + 2))

    assert main(["data", "cache", str(out), "--image-size", "16", "--quiet", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "train: 4 scenes at 16x16" in text and "test: 1 scenes at 16x16" in text
    assert (out / "shepard_metzler_7_parts" / ".gqnbench-cache" / "train-16px.images.npy").exists()


def test_bad_input_is_one_line_naming_the_file(dataset_copy: Path, tmp_path: Path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "missing") in err and "does not exist" in err
    shard = dataset_copy / "shepard_metzler_7_parts" / "test" / "002-of-002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["data", "cache", str(dataset_copy), "--image-size", "16", "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{shard}, record 0: truncated" in err and err.count("\n") == 1
