"""The row checks' fast paths change no verdict: differential tests against the rule-by-rule checks.

:func:`builders.schema.validate` and :func:`builders.limits.check_row_text` first try a one-pass check that
only accepts plainly valid rows, and otherwise run their detailed checks. Here every row, valid or mutated,
must get exactly the verdict of the detailed checks alone (same exception type, rule or skip reason, and
message), and the realistic valid rows must actually take the fast path (else this would test nothing).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from conftest import make_schema_row
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import limits, schema
from builders.errors import SchemaError, SkipRecord
from builders.limits import MAX_TEXT_CHARS, check_row_text
from builders.schema import validate


class Tagged(str):
    """A ``str`` subclass: accepted by the rule checks, never by the fast paths' exact type tests."""


def vg_row(n_regions: int = 15) -> dict[str, Any]:
    """A Visual Genome training row as the builder makes it: float boxes, one question and answer per region."""
    turns = []
    for k in range(1, n_regions + 1):
        turns.append({"from": "human", "value": f"{'<image>' + chr(10) if k == 1 else ''}What is <region{k}>?"})
        turns.append({"from": "gpt", "value": f"a phrase about thing {k}"})
    return {
        "id": "vg:train:107:0", "source": "vg", "variant": "release", "task": "region_caption", "split": "train",
        "image": "VG_100K/107.jpg", "image_id": "107", "width": 800, "height": 600,
        "regions": [{"bbox": [float(k), float(k), float(k + 40), 599.5], "segmentation": "",
                     "label": f"a phrase about thing {k}", "source_id": str(1000 + k)} for k in range(1, n_regions + 1)],
        "conversations": turns, "choices": [], "label": -1, "references": [],
        "meta": '{"coco_id": null, "layout": "release", "vg_image_id": 107}',
    }


def mcq_row() -> dict[str, Any]:
    """A multiple-choice row with references and non-ASCII text (the VCR shape)."""
    row = make_schema_row()
    row.update(choices=["le chat", "der Hund", "猫"], label=2, references=["猫 — a cat"], task="vcr_qa")
    return row


BASES: dict[str, Callable[[], dict[str, Any]]] = {"schema_row": make_schema_row, "vg_row": vg_row,
                                                    "mcq_row": mcq_row}

# Values that break (or just bend) some rule somewhere; each is tried at every position of a row.
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 7, 2 ** 70, 10 ** 400, 640, 1.5, -0.0011, -0.0009, 640.0009, 640.002, float("nan"), float("inf"),
    float("-inf"), "", " ", "x", "train", "coco", "Coco", "vg\n", "<image>", "<image>\nWhat is <region1>?",
    "<region1>", "<region2> and <region3>", "<region0>", "<region" + "9" * 5000 + ">", "\ud800", "é",
    "a" * (MAX_TEXT_CHARS + 1), "[1, 2]", "{}", "not json", Tagged("x"), Tagged("<image>"), [], [1.0, 2.0, 3.0],
    [0.0, 0.0, 5.0, 5.0], [0, 0, 5, 5], (0.0, 0.0, 5.0, 5.0), {}, {"path": "a.jpg", "bytes": None},
    {"from": "gpt", "value": "cat"},
]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position inside a row: dict keys and list indexes, nested."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(row: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    row = copy.deepcopy(row)
    container = row
    for step in path[:-1]:
        container = container[step]
    container[path[-1]] = value
    return row


def removed(row: dict[str, Any], path: tuple) -> dict[str, Any]:
    row = copy.deepcopy(row)
    container = row
    for step in path[:-1]:
        container = container[step]
    del container[path[-1]]
    return row


def verdict(check: Callable[[Any], None], row: Any) -> tuple:
    """What ``check`` says of ``row``: passed, or the exception's type, rule or reason, and message."""
    try:
        check(row)
    except SchemaError as error:
        return "SchemaError", error.rule, str(error)
    except SkipRecord as error:
        return "SkipRecord", error.reason, str(error)
    except Exception as error:  # noqa: BLE001 - a crash must be the same crash
        return type(error).__name__, str(error)
    return ("passed",)


def detailed(check: Callable[[Any], None], fast_path: tuple[Any, str], row: Any) -> tuple:
    """``check``'s verdict with its fast path switched off: the rule-by-rule checks alone."""
    module, name = fast_path
    saved = getattr(module, name)
    setattr(module, name, lambda row: False)
    try:
        return verdict(check, row)
    finally:
        setattr(module, name, saved)


CHECKS = {"validate": (validate, (schema, "_plainly_valid")),
          "check_row_text": (check_row_text, (limits, "_plainly_writable"))}


def assert_same_verdicts(row: Any) -> None:
    for check, fast_path in CHECKS.values():
        assert verdict(check, row) == detailed(check, fast_path, row), row


@pytest.mark.parametrize("base", sorted(BASES))
def test_valid_rows_take_the_fast_paths(base):
    row = BASES[base]()
    assert schema._plainly_valid(row) and limits._plainly_writable(row)
    validate(row)
    check_row_text(row)


def test_the_fast_paths_refuse_what_they_do_not_check_exactly():
    """Each row here keeps every rule but leaves the fast path, whose exact type tests it does not meet."""
    row = make_schema_row()
    tagged = replaced(row, ("conversations", 1, "value"), Tagged("cat"))
    int_box = replaced(row, ("regions", 0, "bbox"), [0, 0, 10, 10])
    long_meta = replaced(row, ("meta",), '{"note": "' + "a" * MAX_TEXT_CHARS + '"}')
    for kept in (tagged, int_box):
        assert not schema._plainly_valid(kept)
        validate(kept)
    assert schema._plainly_valid(long_meta) and limits._plainly_writable(long_meta)  # meta has no length limit


def test_a_side_beyond_float_range_meets_the_rules_in_their_order():
    """``width + tolerance`` overflows for such a side: the box rule broken before it must still be the verdict."""
    row = replaced(replaced(make_schema_row(), ("width",), 10 ** 400), ("regions", 0, "bbox"), [0.0, -1.0, 5.0, 5.0])
    assert verdict(validate, row)[:2] == ("SchemaError", "bbox_inside_image")
    assert_same_verdicts(row)


@pytest.mark.parametrize("base", sorted(BASES))
def test_every_single_mutation_gets_the_detailed_verdict(base):
    row = BASES[base]()
    positions = paths(row)
    verdicts = set()
    for path in positions:
        assert_same_verdicts(removed(row, path))
        for value in ODD_VALUES:
            mutated = replaced(row, path, value)
            assert_same_verdicts(mutated)
            verdicts.add(verdict(validate, mutated)[:2])
    for extra in ({"extra": 1}, {}):
        assert_same_verdicts({**row, **extra})
    # the mutations reach most rules: the comparison above covered refusals, not only passes
    rules = {rule for kind, *rest in verdicts if kind == "SchemaError" for rule in rest[:1]}
    assert len(rules) >= 15, rules


def mutation(row: dict[str, Any]) -> st.SearchStrategy[Callable[[dict[str, Any]], dict[str, Any]]]:
    positions = paths(row)
    replace = st.builds(lambda path, value: lambda r: replaced(r, path, value) if _reaches(r, path) else r,
                        st.sampled_from(positions), st.sampled_from(ODD_VALUES))
    remove = st.builds(lambda path: lambda r: removed(r, path) if _reaches(r, path) else r, st.sampled_from(positions))
    return st.one_of(replace, remove)


def _reaches(row: Any, path: tuple) -> bool:
    """Whether ``path`` still leads somewhere in ``row`` after earlier mutations."""
    container = row
    for step in path[:-1]:
        try:
            container = container[step]
        except (KeyError, IndexError, TypeError):
            return False
    return (isinstance(container, dict) and path[-1] in container) or (
        isinstance(container, list) and isinstance(path[-1], int) and path[-1] < len(container))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data(), base=st.sampled_from(sorted(BASES)))
def test_combined_mutations_get_the_detailed_verdict(data, base):
    row = BASES[base]()
    for change in data.draw(st.lists(mutation(row), min_size=1, max_size=4)):
        row = change(row)
    assert_same_verdicts(row)
