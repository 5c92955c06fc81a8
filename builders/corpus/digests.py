"""Per-row digests: the seeded sampling rank and the identity used to deduplicate rows."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from builders.corpus.contamination import (
    RowImage,
)


def sample_rank(seed: int, row_id: str) -> bytes:
    """The sampling order of a row: ``sample: N`` keeps the N smallest ranks."""
    return hashlib.sha256(f"{seed}\x1fsample\x1f{row_id}".encode()).digest()[:16]


def _string_parts(array: pa.Array) -> tuple[memoryview, list[int], memoryview]:
    """A string array's UTF-8 bytes, its offsets (as ints, indexing those bytes) and its lengths (int32)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset:array.offset + len(array) + 1]
    data = array.buffers()[2]
    lengths = np.diff(offsets).astype(np.int32)
    return memoryview(data if data is not None else b""), offsets.tolist(), memoryview(lengths).cast("B")


def row_digests(batch: pa.RecordBatch, images: list[RowImage]) -> list[bytes]:
    """A digest per row of what makes two rows the same sample: image identity, boxes, labels, turns.

    Each row's boxes, labels, roles and turn texts are contiguous slices of the batch's Arrow buffers; the
    digest reads those slices and the strings' lengths (the boundaries) without building Python strings.
    """
    regions = batch.column("regions")
    region_offsets = (regions.offsets.to_numpy() - regions.offsets[0].as_py()).tolist()
    flat = regions.flatten()
    boxes = memoryview(pc.struct_field(flat, "bbox").flatten().to_numpy(zero_copy_only=False)
                       .astype(np.float32)).cast("B")
    turns = batch.column("conversations")
    turn_offsets = (turns.offsets.to_numpy() - turns.offsets[0].as_py()).tolist()
    turn_flat = turns.flatten()
    strings = [(_string_parts(pc.struct_field(flat, "label")), region_offsets),
               (_string_parts(pc.struct_field(turn_flat, "from")), turn_offsets),
               (_string_parts(pc.struct_field(turn_flat, "value")), turn_offsets)]
    digests = []
    for index, image in enumerate(images):
        r0, r1 = region_offsets[index], region_offsets[index + 1]
        digest = hashlib.blake2b(image.primary.encode(), digest_size=16)
        digest.update(boxes[16 * r0:16 * r1])
        for (data, offsets, lengths), rows in strings:
            lo, hi = rows[index], rows[index + 1]
            digest.update(lengths[4 * lo:4 * hi])
            digest.update(data[offsets[lo]:offsets[hi]])
        digests.append(digest.digest())
    return digests
