"""Property-based fuzzing of every source family with hostile mutations of real-format records.

Each example takes a small raw release built from the real annotation samples (../shared/realdata) in the
layout the builder reads, mutates one to three places anywhere in it (a value replaced by a wrong type, an
extreme number, NaN, a lone surrogate, a placeholder, a path escape, a huge string; or a key deleted) and
builds it. The build must either finish (its skips counted, every written row readable) or stop with a
:class:`~builders.errors.BuildError` that names the input file (``SourceFileError``) or the split and its skip
reasons (``BuildRejected``). Any other exception is a crash, and fails the test.

The default suite runs ``DEFAULT_EXAMPLES`` examples per family (derandomized: the same examples on every
run); ``-m slow`` runs ``SLOW_EXAMPLES`` more per family with fresh randomness.
"""

from __future__ import annotations

import copy
import json
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from builders.build import build_source
from builders.errors import BuildRejected, SourceFileError

DEFAULT_EXAMPLES = 30
SLOW_EXAMPLES = 150
OUTCOMES: Counter[tuple[str, str]] = Counter()

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 63, 10 ** 30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["<image>", "<region1>", "a <region7> b", "12", "640", "1e999", "NaN", "Infinity", "-5",
                     "../../../etc/passwd", "/etc/passwd", "\ud800", "x\udfffy", "a\x00b", "", "   ",
                     "z" * 100_001]),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=5),
    st.dictionaries(st.sampled_from(["id", "x", "name"]), st.integers(), max_size=2),
)


def _slots(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every place inside ``value`` (dict keys, list positions), depth first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield (*path, key)
        yield from _slots(inner, (*path, key))


def mutator(data: st.DataObject) -> Callable[[Any], None]:
    """A function that mutates 1-3 drawn places of a structure in place (replace, or delete a dict key)."""
    def mutate(structure: Any) -> None:
        for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
            slots = list(_slots(structure))
            if not slots:
                return
            path = data.draw(st.sampled_from(slots), label="path")
            parent = structure
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) and data.draw(st.booleans(), label="delete"):
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(HOSTILE, label="value")
    return mutate


# ----- one small real-format release per family ----------------------------------------------------------------
def _json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


def coco(real: Path, root: Path, mutate) -> tuple[str, dict]:
    data = json.loads((real / "coco/coco_mini_2017/instances_train2017.json").read_text())
    images = data["images"][:3]
    keep = {image["id"] for image in images}
    data = {"images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep][:12],
            "categories": data["categories"]}
    _touch(root / "train2017", [image["file_name"] for image in images])
    mutate(data)
    _json(root / "annotations/instances_train2017.json", data)
    return "coco", {}


def refcoco(real: Path, root: Path, mutate) -> tuple[str, dict]:
    from test_builders_refcoco import instances, refs

    files = [refs(), instances()]  # a list of the files' contents: mutations stay inside, or replace a whole file
    _touch(root / "images/mscoco/images/train2014", [image["file_name"] for image in files[1]["images"]])
    mutate(files)
    (root / "refcoco").mkdir(parents=True)
    (root / "refcoco/refs(unc).p").write_bytes(pickle.dumps(files[0]))
    _json(root / "refcoco/instances.json", files[1])
    return "refcoco", {"max_skip_share": 1.0}


def _vg_sample(real: Path) -> tuple[list, list]:
    image_data = json.loads((real / "visual_genome/image_data.json").read_text())
    regions = json.loads((real / "visual_genome/region_descriptions.json").read_text())
    for record in regions:
        record["regions"] = record["regions"][:4]
    return image_data, regions


def vg_release(real: Path, root: Path, mutate) -> tuple[str, dict]:
    image_data, regions = _vg_sample(real)
    for info in image_data:
        _touch(root / "/".join(info["url"].rsplit("/", 2)[-2:-1]), [info["url"].rsplit("/", 1)[-1]])
    files = [image_data, regions]
    mutate(files)
    _json(root / "image_data.json", files[0])
    _json(root / "region_descriptions.json", files[1])
    return "vg", {}


def vg_grit(real: Path, root: Path, mutate) -> tuple[str, dict]:
    from test_builders_vg import grit_file

    image_data, regions = _vg_sample(real)
    data = grit_file(image_data, regions)
    _touch(root / "images", [image["file_name"] for image in data["images"]])
    mutate(data)
    _json(root / "annotations/train.json", data)
    return "vg", {}


def flickr30k_entities(real: Path, root: Path, mutate) -> tuple[str, dict]:
    from test_builders_flickr30k import GIRL, MATCH, OBJECTS, xml_text

    ids = [GIRL, MATCH]
    split, objects, sentences = (list(ids), {i: [[list(chains), list(box) if box else None]
                                                 for chains, box in OBJECTS[i]] for i in ids},
                                 {i: (real / f"flickr30k_entities/Sentences/{i}.txt").read_text().splitlines()
                                  for i in ids})
    files = [split, objects, sentences]
    _touch(root / "flickr30k-images", [f"{i}.jpg" for i in ids])
    mutate(files)
    split, all_objects, all_sentences = files
    (root / "Sentences").mkdir()
    (root / "Annotations").mkdir()
    (root / "train.txt").write_text("\n".join(str(i) for i in split) + "\n" if isinstance(split, list) else str(split),
                                    errors="surrogatepass")
    for image_id in ids:
        lines = all_sentences.get(image_id) if isinstance(all_sentences, dict) else None
        text = "\n".join(map(str, lines)) if isinstance(lines, list) else str(lines)
        (root / "Sentences" / f"{image_id}.txt").write_text(text, errors="surrogatepass")
        objects = all_objects.get(image_id) if isinstance(all_objects, dict) else None
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(xml_text, image_id, objects),
                                                              errors="surrogatepass")
    return "flickr30k", {}


def _xml(xml_text, image_id: str, objects: Any) -> str:
    """The annotation XML of (possibly mutated) objects; values are escaped into text, as any writer would."""
    from xml.sax.saxutils import escape

    usable = []
    for item in objects if isinstance(objects, list) else []:
        chains, box = (item + [None, None])[:2] if isinstance(item, list) else ([], None)
        chains = [escape(str(c)) for c in chains] if isinstance(chains, list) else [escape(str(chains))]
        box = [escape(str(v)) for v in box][:4] if isinstance(box, list) else None
        usable.append((chains, box))
    return xml_text(image_id, usable)


def flickr30k_mdetr(real: Path, root: Path, mutate) -> tuple[str, dict]:
    from test_builders_flickr30k import GIRL, mdetr_ann, mdetr_entry

    caption = "A girl sitting outside on concrete near water in a black dress ."
    data = {"images": [mdetr_entry(GIRL, 2, caption, 3, 500, 375)],
            "annotations": [mdetr_ann(0, 3, caption, ["A girl", "a black dress"], (182, 122, 320, 370)),
                            mdetr_ann(1, 3, caption, ["water"], (1, 1, 500, 200))],
            "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}
    _touch(root / "flickr30k-images", [f"{GIRL}.jpg"])
    mutate(data)
    _json(root / "mdetr_annotations/final_flickr_mergedGT_train.json", data)
    return "flickr30k", {}


def vcr(real: Path, root: Path, mutate) -> tuple[str, dict]:
    record = json.loads((real / "vcr/val.jsonl").read_text().splitlines()[0])
    metadata = json.loads((real / "vcr/vcr1images" / record["metadata_fn"]).read_text())
    files = [[record, copy.deepcopy(record)], metadata]
    image = root / "vcr1images" / record["img_fn"]
    _touch(image.parent, [image.name])
    metadata_fn = record["metadata_fn"]
    mutate(files)
    records = files[0] if isinstance(files[0], list) else [files[0]]
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _json(root / "vcr1images" / metadata_fn, files[1])
    return "vcr", {"max_skip_share": 1.0}


def llava(real: Path, root: Path, mutate) -> tuple[str, dict]:
    records = json.loads((real / "llava_instruct/conversation_58k.json").read_text())[:2]
    (root / "train2017").mkdir(parents=True)
    for record in records:
        Image.new("RGB", (64, 48), "gray").save(root / "train2017" / record["image"])
    detections = [{"filename": records[0]["image"], "pred_bboxes": [[0.1, 0.2, 0.5, 0.9, 0.95]], "labels": [3]}]
    files = [records, detections]
    mutate(files)
    _json(root / "conversation_58k.json", files[0])
    (root / "detections.pkl").write_bytes(pickle.dumps(files[1]))
    return "llava", {"detections": "detections.pkl", "class_names": "lvis", "max_skip_share": 1.0}


FAMILIES = {"coco": coco, "refcoco": refcoco, "vg_release": vg_release, "vg_grit": vg_grit,
            "flickr30k_entities": flickr30k_entities, "flickr30k_mdetr": flickr30k_mdetr, "vcr": vcr,
            "llava": llava}


# ----- the property -------------------------------------------------------------------------------------------------
def build_outcome(real: Path, family: str, data: st.DataObject) -> str:
    """Build one mutated release; return ``clean`` / ``skips`` / ``error`` / ``rejected`` or fail on a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        source, options = FAMILIES[family](real, root, mutator(data))
        out = Path(tmp) / "out"
        try:
            report = build_source(source, root, out, progress=False, options=options)
        except SourceFileError as error:
            assert Path(error.path).is_relative_to(root) or str(root) in str(error), error
            assert not out.exists()
            return "error"
        except BuildRejected as error:
            assert str(error).startswith(f"{source}/") and "skips by reason" in str(error), error
            assert not out.exists()
            return "rejected"
        except FileNotFoundError as error:  # no split file left to build (e.g. refs replaced by an empty list)
            assert str(root) in str(error) and "no split's raw files" in str(error), error
            return "error"
        written = sum(pq.read_metadata(path).num_rows for path in (out / "data").glob("*.parquet"))
        assert written == report.total_rows
        return "skips" if report.total_skipped else "clean"


@pytest.fixture(scope="module", autouse=True)
def _tally():
    """Print outcomes per family at the end of the module (``-s`` shows them): the closing note's table."""
    yield
    for family in FAMILIES:
        counts = {outcome: OUTCOMES[(family, outcome)] for outcome in ("clean", "skips", "error", "rejected")}
        print(f"fuzz {family}: tried {sum(counts.values())}, {counts}")


def _fuzz(realdata: Path, family: str, data: st.DataObject) -> None:
    OUTCOMES[(family, build_outcome(realdata, family, data))] += 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=DEFAULT_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_release_builds_or_stops_with_a_clear_error(realdata, family, data):
    _fuzz(realdata, family, data)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_release_builds_or_stops_with_a_clear_error_long(realdata, family, data):
    _fuzz(realdata, family, data)
