"""TFRecord reading/writing: CRCs, a foreign (hand-serialised) file, the tfrecord package both ways,
and one clear error per kind of bad input, naming the file and record index."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gqnbench.data.errors import CorruptRecordError, MissingDataError, RecordFormatError
from gqnbench.data.layout import list_shards, shard_name
from gqnbench.data.tfrecord_io import (
    count_records,
    encode_example,
    frame_record,
    iter_records,
    masked_crc32c,
    read_scenes,
    write_tfrecord,
)

# ---------------------------------------------------------------- independent reference pieces


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli, reflected polynomial 0x82F63B78): slow, obviously correct."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_reference(data: bytes) -> int:
    crc = crc32c_reference(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def hand_example(frames: list[bytes], cameras: np.ndarray) -> bytes:
    """tf.train.Example serialised by hand from example.proto / feature.proto: Example.features = 1;
    Features.feature = 1 (map entry: key = 1, value = 2); Feature.bytes_list = 1, float_list = 2;
    BytesList.value = 1 (repeated bytes); FloatList.value = 1 (packed floats, as TensorFlow writes)."""
    bytes_list = b"".join(field(1, f) for f in frames)
    float_list = field(1, struct.pack(f"<{cameras.size}f", *cameras.ravel().tolist()))
    # frames first, then cameras: the reverse of our own (sorted) order, to show order does not matter
    entries = [(b"frames", field(1, bytes_list)), (b"cameras", field(2, float_list))]
    features = b"".join(field(1, field(1, k) + field(2, v)) for k, v in entries)
    return field(1, features)


def hand_record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_reference(length)) + payload + struct.pack("<I", masked_reference(payload))


def jpeg(image: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def scene_frames(seed: int, size: int = 64) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = np.zeros((15, size, size, 3), dtype=np.uint8)
    for v in range(15):
        r, c = rng.integers(0, size - 16, 2)
        raw[v, r : r + 16, c : c + 16] = rng.integers(0, 256, 3)
    cameras = rng.normal(size=(15, 5)).astype(np.float32)
    return [jpeg(f) for f in raw], cameras, raw


# ---------------------------------------------------------------- CRC and framing


def test_crc32c_matches_reference_and_tfrecord_package():
    from tfrecord.writer import TFRecordWriter

    assert crc32c_reference(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert masked_crc32c(data) == masked_reference(data)
        assert struct.pack("<I", masked_crc32c(data)) == TFRecordWriter.masked_crc(data)


def test_hand_serialised_foreign_file_reads(tmp_path: Path):
    """A file built byte by byte from the TFRecord and protobuf specs (not by our writer) reads back."""
    path = tmp_path / "001-of-001.tfrecord"
    expected = [scene_frames(s) for s in (0, 1)]
    path.write_bytes(b"".join(hand_record(hand_example(f, c)) for f, c, _ in expected))
    scenes = list(read_scenes(path))
    assert len(scenes) == 2 == count_records(path)
    for scene, (frames, cameras, _) in zip(scenes, expected):
        assert scene.frames.shape == (15, 64, 64, 3) and scene.frames.dtype == np.uint8
        assert np.array_equal(scene.cameras, cameras)  # float32 bit-exact
        for v in range(15):
            assert np.array_equal(scene.frames[v], np.asarray(Image.open(io.BytesIO(frames[v]))))


def test_our_framing_equals_hand_framing():
    payload = hand_example(*scene_frames(2)[:2])
    assert frame_record(payload) == hand_record(payload)


def test_tfrecord_package_reads_ours_and_we_read_its_files(tmp_path: Path):
    from tfrecord.reader import tfrecord_loader
    from tfrecord.writer import TFRecordWriter

    frames, cameras, _ = scene_frames(3)
    ours = tmp_path / "ours.tfrecord"
    write_tfrecord(ours, [encode_example(frames, cameras)] * 2)
    got = list(tfrecord_loader(str(ours), None, {"frames": "byte", "cameras": "float"}))
    assert len(got) == 2
    assert [bytes(b) for b in got[0]["frames"]] == frames
    assert np.array_equal(got[0]["cameras"], cameras.ravel())

    theirs = tmp_path / "theirs.tfrecord"
    writer = TFRecordWriter(str(theirs))
    writer.write({"frames": (frames, "byte"), "cameras": (cameras.ravel().tolist(), "float")})
    writer.close()
    (scene,) = list(read_scenes(theirs))
    assert np.array_equal(scene.cameras, cameras)


# ---------------------------------------------------------------- bad input


def write_two(path: Path, second: bytes) -> Path:
    """A file with a good record 0 and ``second`` as record 1 (so errors must report index 1)."""
    good = encode_example(*scene_frames(4)[:2])
    path.write_bytes(frame_record(good) + frame_record(second))
    return path


def check_error(exc: pytest.ExceptionInfo, path: Path, record: int | None, *words: str) -> None:
    msg = str(exc.value)
    assert str(path) in msg and exc.value.path == path
    if record is not None:
        assert f"record {record}" in msg and exc.value.record == record
    for w in words:
        assert w in msg, msg


def test_truncated_file(tmp_path: Path):
    path = write_two(tmp_path / "t.tfrecord", encode_example(*scene_frames(5)[:2]))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CorruptRecordError) as exc:
        list(read_scenes(path))
    check_error(exc, path, 1, "truncated")
    with pytest.raises(CorruptRecordError) as exc:
        count_records(path)
    check_error(exc, path, 1, "truncated")
    path.write_bytes(data[:7])  # not even one 12-byte header
    with pytest.raises(CorruptRecordError) as exc:
        list(iter_records(path))
    check_error(exc, path, 0, "truncated record header")


def test_corrupt_data_and_length_crc(tmp_path: Path):
    path = write_two(tmp_path / "c.tfrecord", encode_example(*scene_frames(5)[:2]))
    data = bytearray(path.read_bytes())
    second = len(frame_record(encode_example(*scene_frames(4)[:2])))
    flipped = bytearray(data)
    flipped[second + 100] ^= 0x40  # one bit inside record 1's payload
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptRecordError) as exc:
        list(read_scenes(path))
    check_error(exc, path, 1, "data CRC32C mismatch")
    flipped = bytearray(data)
    flipped[second + 1] ^= 0x01  # record 1's length field
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptRecordError) as exc:
        list(read_scenes(path))
    check_error(exc, path, 1, "length CRC32C mismatch")


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("camera_count", ("'cameras' has 74 floats, expected 75",)),
        ("frame_count", ("'frames' has 14 frames, expected 15",)),
        ("not_jpeg", ("view 3", "not a JPEG")),
        ("broken_jpeg", ("view 3", "cannot decode")),
        ("frame_shape", ("view 3", "32x32 RGB, expected 64x64 RGB")),
        ("grayscale", ("view 3", "64x64 L, expected 64x64 RGB")),
        ("missing_feature", ("missing feature 'cameras'",)),
        ("not_example", ("not a tf.train.Example",)),
    ],
)
def test_bad_records(tmp_path: Path, case: str, words: tuple[str, ...]):
    frames, cameras, raw = scene_frames(6)
    if case == "camera_count":
        payload = encode_example(frames, cameras.ravel()[:74])
    elif case == "frame_count":
        payload = encode_example(frames[:14], cameras)
    elif case == "not_jpeg":
        buf = io.BytesIO()
        Image.fromarray(raw[3]).save(buf, format="PNG")
        payload = encode_example(frames[:3] + [buf.getvalue()] + frames[4:], cameras)
    elif case == "broken_jpeg":
        payload = encode_example(frames[:3] + [frames[3][:40]] + frames[4:], cameras)
    elif case == "frame_shape":
        payload = encode_example(frames[:3] + [jpeg(raw[3][:32, :32])] + frames[4:], cameras)
    elif case == "grayscale":
        payload = encode_example(frames[:3] + [jpeg(raw[3][..., 0])] + frames[4:], cameras)
    elif case == "missing_feature":
        payload = _only_frames(frames)
    else:
        payload = b"\xff\xff\xff\xff garbage"
    path = write_two(tmp_path / "bad.tfrecord", payload)
    with pytest.raises(RecordFormatError) as exc:
        list(read_scenes(path))
    check_error(exc, path, 1, *words)


def _only_frames(frames: list[bytes]) -> bytes:
    bytes_list = b"".join(field(1, f) for f in frames)
    return field(1, field(1, field(1, b"frames") + field(2, field(1, bytes_list))))


def test_missing_split_empty_dir_and_missing_root(tmp_path: Path):
    with pytest.raises(MissingDataError) as exc:
        list_shards(tmp_path / "nowhere", "train")
    check_error(exc, tmp_path / "nowhere", None, "does not exist")
    with pytest.raises(MissingDataError) as exc:
        list_shards(tmp_path, "train")  # an empty directory
    check_error(exc, tmp_path, None, "no shepard_metzler_7_parts/")
    (tmp_path / "shepard_metzler_7_parts" / "train").mkdir(parents=True)
    with pytest.raises(MissingDataError) as exc:
        list_shards(tmp_path, "test")
    check_error(exc, tmp_path / "shepard_metzler_7_parts" / "test", None, "missing split folder 'test'")
    with pytest.raises(MissingDataError) as exc:
        list_shards(tmp_path, "train")
    check_error(exc, tmp_path / "shepard_metzler_7_parts" / "train", None, "no *.tfrecord files")
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, ValueError)


def test_shard_names():
    assert shard_name(0, 12) == "001-of-012.tfrecord"
    assert shard_name(899, 900) == "900-of-900.tfrecord"
    assert shard_name(0, 1500) == "0001-of-1500.tfrecord"


def test_errors_survive_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(CorruptRecordError("x: bad", Path("x"), 3)))
    assert isinstance(err, CorruptRecordError) and err.path == Path("x") and err.record == 3
