"""Read and write DeepMind's Shepard-Metzler TFRecords without TensorFlow.

Framing (TensorFlow's ``TFRecordWriter``): for each record ::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32). The PyPI
``tfrecord`` package reads and writes this framing but never checks the CRCs and raises a
bare ``RuntimeError`` on a short read, so this module frames records itself and verifies
both checksums, with errors that name the file, record index and byte offset. The
``crc32c`` package (a dependency of ``tfrecord``) computes the checksum in C.

Payload: a ``tf.train.Example`` protobuf (schema from the ``tfrecord`` package, no
TensorFlow) with ``frames`` = BytesList of 15 JPEG images and ``cameras`` = FloatList of
75 floats (15 x (x, y, z, yaw, pitch)). We serialise with ``deterministic=True`` so the map of
features is written in sorted key order and the same scene gives the same bytes in
every process (TensorFlow's own order may differ; any order parses the same).

JPEG decoding uses Pillow (libjpeg-turbo, accurate integer IDCT ``JDCT_ISLOW`` and fancy
upsampling). TensorFlow's ``tf.image.decode_jpeg`` defaults to a faster, less accurate
IDCT and differs from Pillow by up to 22 levels (mean 0.37, SPEC section 5); with
``dct_method='INTEGER_ACCURATE'`` TensorFlow and Pillow agree exactly, so our frames are
the ones TensorFlow gives with that setting.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import crc32c as _crc32c
import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image
from tfrecord import example_pb2

from gqnbench.config import FRAME_SIZE, NUM_VIEWS
from gqnbench.data.errors import CorruptRecordError, RecordFormatError, where
from gqnbench.data.layout import CAMERA_DIM
from gqnbench.files import atomic_write_bytes

FRAMES_KEY = "frames"
CAMERAS_KEY = "cameras"
JPEG_MAGIC = b"\xff\xd8\xff"
# Frames smaller than 64 are made by area averaging (BOX: exact 2x2 means for 64 -> 32, no
# ringing; the same as torch's adaptive average pooling at integer factors).
RESIZE_FILTER = Image.Resampling.BOX
_MASK_DELTA = 0xA282EAD8
_HEADER = 12  # uint64 length + uint32 crc
_FOOTER = 4


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C of ``data`` (Castagnoli polynomial, then rotate right 15 and add a constant)."""
    crc = _crc32c.crc32c(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length bytes, payload, masked CRC of the payload."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def write_tfrecord(path: str | Path, payloads: Iterable[bytes]) -> Path:
    """Write ``payloads`` as a TFRecord file, atomically (a crash never leaves half a shard)."""
    return atomic_write_bytes(path, b"".join(frame_record(p) for p in payloads))


def iter_records(path: str | Path, verify_crc: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, payload)`` of every record; truncation or a CRC mismatch raises
    :class:`CorruptRecordError` naming the file, record index and byte offset."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    yield from _iter_buffer(data, path, verify_crc)


def _iter_buffer(data: bytes, path: Path, verify_crc: bool) -> Iterator[tuple[int, bytes]]:
    view = memoryview(data)
    offset, index, size = 0, 0, len(data)
    while offset < size:
        if size - offset < _HEADER:
            raise CorruptRecordError(
                f"{where(path, index)}: truncated record header at byte {offset} "
                f"({size - offset} bytes left, a header is {_HEADER})",
                path,
                index,
            )
        length_bytes = view[offset : offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", view[offset + 8 : offset + 12])
        if verify_crc and length_crc != masked_crc32c(length_bytes):
            raise CorruptRecordError(
                f"{where(path, index)}: length CRC32C mismatch at byte {offset} (corrupt or not a TFRecord file)",
                path,
                index,
            )
        start = offset + _HEADER
        end = start + length
        if end + _FOOTER > size:
            raise CorruptRecordError(
                f"{where(path, index)}: truncated record at byte {offset}: it declares {length} data bytes "
                f"+ {_FOOTER} CRC bytes but the file has {size - start} left",
                path,
                index,
            )
        payload = view[start:end]
        if verify_crc:
            (data_crc,) = struct.unpack("<I", view[end : end + _FOOTER])
            if data_crc != masked_crc32c(payload):
                raise CorruptRecordError(
                    f"{where(path, index)}: data CRC32C mismatch at byte {offset} (the record's bytes are corrupt)",
                    path,
                    index,
                )
        yield index, bytes(payload)
        offset = end + _FOOTER
        index += 1


def count_records(path: str | Path) -> int:
    """Number of records, from the framing alone (length headers; checks the length CRC and that the
    file is not truncated, but does not read the payloads)."""
    path = Path(path)
    size = path.stat().st_size
    count, offset = 0, 0
    with open(path, "rb") as fh:
        while offset < size:
            header = fh.read(_HEADER)
            if len(header) < _HEADER:
                raise CorruptRecordError(
                    f"{where(path, count)}: truncated record header at byte {offset} "
                    f"({len(header)} bytes left, a header is {_HEADER})",
                    path,
                    count,
                )
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
                raise CorruptRecordError(
                    f"{where(path, count)}: length CRC32C mismatch at byte {offset} (corrupt or not a TFRecord file)",
                    path,
                    count,
                )
            offset += _HEADER + length + _FOOTER
            if offset > size:
                raise CorruptRecordError(
                    f"{where(path, count)}: truncated record: it declares {length} data bytes + {_FOOTER} CRC bytes "
                    f"but the file ends {offset - size} bytes early",
                    path,
                    count,
                )
            fh.seek(offset)
            count += 1
    return count


def encode_example(frames: Sequence[bytes], cameras: np.ndarray) -> bytes:
    """Serialise one scene as a ``tf.train.Example`` (``frames`` BytesList, ``cameras`` FloatList)."""
    cams = np.asarray(cameras, dtype=np.float32).reshape(-1)
    example = example_pb2.Example(
        features=example_pb2.Features(
            feature={
                FRAMES_KEY: example_pb2.Feature(bytes_list=example_pb2.BytesList(value=list(frames))),
                CAMERAS_KEY: example_pb2.Feature(float_list=example_pb2.FloatList(value=cams.tolist())),
            }
        )
    )
    return example.SerializeToString(deterministic=True)


def parse_example(
    payload: bytes, path: str | Path, index: int, num_views: int = NUM_VIEWS
) -> tuple[list[bytes], np.ndarray]:
    """``(frames, cameras)`` of one record: 15 JPEG byte strings and float32 [15, 5] cameras.

    Raises :class:`RecordFormatError` for an unparsable record, missing or mistyped features,
    or a wrong number of frames or camera floats.
    """
    example = example_pb2.Example()
    try:
        example.ParseFromString(payload)
    except DecodeError as exc:
        raise RecordFormatError(f"{where(path, index)}: not a tf.train.Example protobuf ({exc})", path, index) from exc
    features = example.features.feature
    for key, kind in ((FRAMES_KEY, "bytes_list"), (CAMERAS_KEY, "float_list")):
        if key not in features:
            raise RecordFormatError(
                f"{where(path, index)}: missing feature {key!r} (has {sorted(features)}); "
                f"expected {FRAMES_KEY!r} (BytesList) and {CAMERAS_KEY!r} (FloatList)",
                path,
                index,
            )
        got = features[key].WhichOneof("kind")
        if got != kind:
            raise RecordFormatError(f"{where(path, index)}: feature {key!r} is a {got}, expected {kind}", path, index)
    frames = list(features[FRAMES_KEY].bytes_list.value)
    if len(frames) != num_views:
        raise RecordFormatError(
            f"{where(path, index)}: feature {FRAMES_KEY!r} has {len(frames)} frames, expected {num_views}", path, index
        )
    cams = np.asarray(features[CAMERAS_KEY].float_list.value, dtype=np.float32)
    if cams.size != num_views * CAMERA_DIM:
        raise RecordFormatError(
            f"{where(path, index)}: feature {CAMERAS_KEY!r} has {cams.size} floats, expected "
            f"{num_views * CAMERA_DIM} ({num_views} cameras x (x, y, z, yaw, pitch))",
            path,
            index,
        )
    cams = cams.reshape(num_views, CAMERA_DIM)
    bad = ~np.isfinite(cams)
    if bad.any():
        view, col = (int(i) for i in np.argwhere(bad)[0])
        name = ("x", "y", "z", "yaw", "pitch")[col] if CAMERA_DIM == 5 else str(col)
        raise RecordFormatError(
            f"{where(path, index)}, view {view}: camera {name} is {cams[view, col]} (cameras must be finite; "
            f"{int(bad.any(axis=1).sum())} of {num_views} views have a non-finite value)",
            path,
            index,
        )
    return frames, cams


def decode_frame(data: bytes, path: str | Path, index: int, view: int, frame_size: int = FRAME_SIZE) -> Image.Image:
    """Decode one JPEG frame with Pillow; anything but a ``frame_size`` square RGB JPEG raises
    :class:`RecordFormatError` naming the file, record and view."""
    loc = f"{where(path, index)}, view {view}"
    if not data.startswith(JPEG_MAGIC):
        raise RecordFormatError(
            f"{loc}: frame is not a JPEG (starts with {bytes(data[:8])!r}, expected {JPEG_MAGIC!r})", path, index
        )
    try:
        image = Image.open(io.BytesIO(data), formats=["JPEG"])
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RecordFormatError(f"{loc}: cannot decode the JPEG frame ({exc})", path, index) from exc
    if image.mode != "RGB" or image.size != (frame_size, frame_size):
        raise RecordFormatError(
            f"{loc}: frame is {image.size[0]}x{image.size[1]} {image.mode}, expected {frame_size}x{frame_size} RGB",
            path,
            index,
        )
    return image


@dataclass(frozen=True)
class SceneRecord:
    """One decoded scene: ``frames`` uint8 [15, H, W, 3], ``cameras`` float32 [15, 5]."""

    frames: np.ndarray
    cameras: np.ndarray


def decode_scene(
    payload: bytes, path: str | Path, index: int, image_size: int = FRAME_SIZE, resample: int = RESIZE_FILTER
) -> SceneRecord:
    """Parse and decode a record; frames are resized to ``image_size`` with ``resample`` if it differs."""
    frames, cameras = parse_example(payload, path, index)
    out = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for v, data in enumerate(frames):
        image = decode_frame(data, path, index, v)
        if image_size != image.size[0]:
            image = image.resize((image_size, image_size), resample=resample)
        out[v] = np.asarray(image)
    return SceneRecord(frames=out, cameras=cameras)


def read_scenes(path: str | Path, image_size: int = FRAME_SIZE, resample: int = RESIZE_FILTER) -> Iterator[SceneRecord]:
    """Every scene of one TFRecord file, decoded and checked."""
    for index, payload in iter_records(path):
        yield decode_scene(payload, path, index, image_size, resample)
