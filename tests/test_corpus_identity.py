"""Canonical image identity across releases and perceptual hashes (builders.corpus.image_identity)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageDraw

from builders.corpus.image_identity import HashIndex, image_keys, perceptual_hash, primary_key


def test_coco_2014_and_2017_names_share_the_coco_id():
    refcoco = image_keys("refcoco", "images/mscoco/images/train2014/COCO_train2014_000000581857.jpg", "581857", "{}")
    coco = image_keys("coco", "train2017/000000581857.jpg", "581857", "{}")
    llava = image_keys("llava", "train2017/000000581857.jpg", "000000581857", "{}")
    assert "coco:581857" in refcoco & coco & llava
    assert primary_key(refcoco) == primary_key(coco) == "coco:581857"


def test_file_name_alone_identifies_coco_and_flickr_images():
    # an unknown source (a user's own build) still maps COCO / Flickr30K file names
    assert "coco:42" in image_keys("mine", "val2014/COCO_val2014_000000000042.jpg", "a", "{}")
    assert "coco:42" in image_keys("mine", "val2017/000000000042.jpg", "a", "{}")
    assert "flickr:1000092795" in image_keys("mine", "flickr30k-images/1000092795.jpg", "a", "{}")


def test_visual_genome_meta_links_coco_and_flickr():
    keys = image_keys("vg", "VG_100K/10.jpg", "10", json.dumps({"coco_id": 581857, "flickr_id": 1000092795}))
    assert {"vg:10", "coco:581857", "flickr:1000092795"} <= keys
    assert primary_key(keys) == "coco:581857"
    plain = image_keys("vg", "VG_100K/11.jpg", "11", json.dumps({"coco_id": None, "flickr_id": None}))
    assert plain == {"vg:11"}


def test_ids_of_different_sources_do_not_collide():
    # VG image 10 and VCR image "10" are different pictures; only COCO/Flickr ids are shared spaces
    assert not image_keys("vg", "VG_100K/10.jpg", "10", "{}") & image_keys("vcr", "x/10.jpg", "10", "{}")
    assert not image_keys("flickr30k", "flickr30k-images/10.jpg", "10", "{}") & image_keys("coco", "", "10", "{}")


def _picture(seed: int, size=(320, 240)) -> Image.Image:
    image = Image.new("RGB", size, (40 + seed * 30 % 200, 90, 140))
    draw = ImageDraw.Draw(image)
    for k in range(6):
        x = (seed * 53 + k * 47) % (size[0] - 60)
        y = (seed * 31 + k * 29) % (size[1] - 60)
        draw.ellipse([x, y, x + 40 + k * 5, y + 50], fill=((k * 70 + seed * 13) % 255, 200 - k * 20, 30 * k))
    return image


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["average", "difference"])
def test_perceptual_hash_survives_reencoding_and_resizing(kind):
    original = _picture(1)
    same = perceptual_hash(_jpeg(original, 95), kind)
    reencoded = perceptual_hash(_jpeg(original.resize((200, 150)), 40), kind)
    other = perceptual_hash(_jpeg(_picture(7)), kind)
    assert (same ^ reencoded).bit_count() <= 6
    assert (same ^ other).bit_count() > 10


def test_hash_index_finds_hashes_within_the_distance_only():
    index = HashIndex(max_distance=3)
    base = 0x0F0F_F0F0_1234_5678
    index.add(base, "a")
    index.add(base ^ 0b111, "b")          # 3 bits away
    index.add(base ^ 0b1111_0000_1, "c")  # 5 bits away
    assert sorted(index.near(base)) == ["a", "b"]
    assert HashIndex(0).near(base) == []


def test_unknown_hash_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown perceptual hash"):
        perceptual_hash(_jpeg(_picture(1)), "wavelet")
