"""The answer cache on bad files: damaged, truncated, another program's database, another schema, an answer
that is not JSON. Each is refused with an error naming the file and the ways out (``cache=``,
``rebuild_cache=true``), by ``gpt4roi eval`` before any model is built; ``rebuild_cache=true`` sets the file
aside and the run goes on with an empty cache."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from evaluators.cache import AnswerCache, CacheError, check_cache, prepare_cache

KEYS = [("vcr_qa", f"request-{i:04d}-" + "x" * 40, '{"max_new_tokens": 8}') for i in range(2000)]
BUILT: list[str] = []


class RecordingChance:
    """The chance floor's place in ``model=``: records that it was built, then refuses to be used."""

    def __init__(self, **_: object):
        BUILT.append("built")
        raise RuntimeError("the model was built although the cache is unusable")


def filled(path: Path) -> Path:
    """A real cache of 2,000 answers (several SQLite pages), closed so that everything is in the main file."""
    cache = AnswerCache(path, "model-a")
    cache.put_many([(key, f"answer number {i} " * 4) for i, key in enumerate(KEYS)])
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def expect_refusal(path: Path, words: str) -> str:
    with pytest.raises(CacheError) as caught:
        check_cache(path)
    message = str(caught.value)
    assert str(path) in message and words in message
    assert "cache=" in message and "rebuild_cache=true" in message
    return message


def test_a_good_cache_passes_and_keeps_its_answers_including_non_finite_scores(tmp_path):
    path = filled(tmp_path / "cache.sqlite")
    cache = AnswerCache(path, "model-a")
    cache.put_many([(("roc", "r1", "{}"), -math.inf), (("roc", "r2", "{}"), -12.5)])
    cache.close()
    check_cache(path)  # NaN / Infinity are JSON to Python although SQLite's json_valid says no
    cache = AnswerCache(path, "model-a")
    got = cache.get_many([KEYS[7], ("roc", "r1", "{}"), ("roc", "r2", "{}"), ("roc", "missing", "{}")])
    assert got == {KEYS[7]: "answer number 7 " * 4, ("roc", "r1", "{}"): -math.inf, ("roc", "r2", "{}"): -12.5}
    assert cache.count() == 2002
    cache.close()


def test_a_truncated_cache_is_refused_naming_the_file(tmp_path):
    path = filled(tmp_path / "cache.sqlite")
    data = path.read_bytes()
    assert len(data) > 100_000
    path.write_bytes(data[: len(data) // 2])
    expect_refusal(path, "damaged")


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(os.urandom(4096))
    expect_refusal(path, "damaged or not a SQLite database (file is not a database)")
    path.write_text('{"answers": []}\n')  # e.g. cache= pointed at a JSON file
    expect_refusal(path, "damaged or not a SQLite database")


def test_a_damaged_page_is_found_by_the_check(tmp_path):
    path = filled(tmp_path / "cache.sqlite")
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page: 3 * page + 200] = os.urandom(200)  # a b-tree page in the middle of the table
    path.write_bytes(bytes(data))
    expect_refusal(path, "damaged")


def test_another_programs_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "places.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE bookmarks (url TEXT)")
    expect_refusal(path, "a SQLite database of another program (tables: bookmarks")
    with sqlite3.connect(path) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["bookmarks"]


def test_an_answers_table_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE answers (key TEXT, answer TEXT)")
    expect_refusal(path, "its answers table has columns (key, answer)")
    with pytest.raises(CacheError, match="columns"):
        AnswerCache(path, "model-a")


def test_an_answer_that_is_not_json_is_named_by_the_check_and_by_a_lookup(tmp_path):
    path = filled(tmp_path / "cache.sqlite")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE answers SET answer='not json {' WHERE request=?", (KEYS[1234][1],))
    message = expect_refusal(path, f"the cached answer to request {KEYS[1234][1]!r} of 'vcr_qa' is not JSON")
    assert "'not json {'" in message
    cache = AnswerCache(path, "model-a")  # opening is cheap (schema only); the lookup names the answer
    with pytest.raises(CacheError, match="request-1234"):
        cache.get_many(KEYS[1230:1240])
    cache.close()


def test_rebuild_sets_the_file_aside_and_starts_empty(tmp_path, capsys):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"garbage" * 100)
    (tmp_path / "cache.sqlite.old").write_text("an earlier one")
    assert prepare_cache(path, rebuild=True) == path
    assert (tmp_path / "cache.sqlite.old").read_text() == "an earlier one"
    assert (tmp_path / "cache.sqlite.old1").read_bytes() == b"garbage" * 100
    assert f"{path} set aside as {tmp_path / 'cache.sqlite.old1'}" in capsys.readouterr().out
    cache = AnswerCache(path, "model-a")
    assert cache.count() == 0
    cache.close()


def eval_args(tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    return ["eval", "model=chance", "model._target_=test_eval_cache.RecordingChance", "tasks=[vcr_qa]",
            f"data_root={tmp_path / 'nothing'}", f"output_dir={tmp_path / 'out'}", f"cache={cache}",
            "progress=false", *extra]


def test_eval_refuses_a_bad_cache_before_building_the_model(tmp_path, capsys):
    from gpt4roi.cli import main

    path = filled(tmp_path / "cache.sqlite")
    path.write_bytes(path.read_bytes()[:5000])
    BUILT.clear()
    assert main(eval_args(tmp_path, path)) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"gpt4roi eval: error: answer cache {path}:")
    assert "rebuild_cache=true" in error and BUILT == []


def test_eval_with_rebuild_cache_goes_on_to_the_model(tmp_path):
    from gpt4roi.cli import main

    path = tmp_path / "cache.sqlite"
    path.write_text(json.dumps({"not": "a database"}))
    BUILT.clear()
    with pytest.raises(InstantiationException, match="the model was built"):  # Hydra wraps the model's error
        main(eval_args(tmp_path, path, "rebuild_cache=true"))
    assert BUILT == ["built"] and (tmp_path / "cache.sqlite.old").is_file()
    check_cache(path)


def test_a_folder_or_device_is_refused_and_never_set_aside(tmp_path):
    folder = tmp_path / "cache.sqlite"
    folder.mkdir()
    for path in (folder, Path(os.devnull)):
        with pytest.raises(CacheError) as caught:
            prepare_cache(path, rebuild=True)
        assert str(caught.value) == (f"answer cache {path}: not a file (a folder or a device). "
                                     "Point cache= at another file")
    assert folder.is_dir() and Path(os.devnull).exists() and not (tmp_path / "cache.sqlite.old").exists()
