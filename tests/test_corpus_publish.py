"""Publishing: folder checks, dry run without network, the upload calls against a recording HfApi."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpus_rows import schema_row, write_build
from omegaconf import OmegaConf

from builders.corpus import publish as publish_module
from builders.corpus.assembler import assemble
from builders.corpus.publish import PublishRefused, check_folder, publish
from builders.corpus.recipe import parse_recipe
from builders.corpus.settings import Settings


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("publish")
    a = write_build(tmp / "a", [schema_row("coco", "train", str(k), image=f"train2017/{k:012d}.jpg",
                                           image_id=str(k), boxes=[[0, 0, 10 + k, 10]]) for k in range(5)])
    b = write_build(tmp / "b", [schema_row("vg", "train", str(k), image=f"VG_100K/{k}.jpg", image_id=str(k),
                                           boxes=[[1, 1, 20, 20 + k]]) for k in range(3)])
    recipe = parse_recipe({"name": "pub", "sources": {"coco": {"builder": "coco", "build": str(a)},
                                                      "vg": {"builder": "vg", "build": str(b)}}})
    out = tmp / "corpus"
    assemble(recipe, Settings(raw_root=None, out=out, progress=False, plots=False))
    return out


@pytest.fixture
def folder(corpus_folder, tmp_path) -> Path:
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_folder, copy)
    return copy


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records each call and its arguments."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        if name not in ("create_repo", "create_branch", "upload_folder"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return f"https://hub.example/datasets/{args[0] if args else kwargs['repo_id']}"
        return call


@pytest.fixture
def no_network(monkeypatch):
    """Any socket or HfApi construction fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", refuse)


def test_dry_run_lists_files_and_sizes_without_network(folder, no_network, capsys):
    check = publish(folder, "someone/corpus", dry_run=True, private=True)
    names = [name for name, _ in check.files]
    assert names == sorted(names)
    assert {"README.md", "corpus_report.json", "coco/train-00000-of-00001.parquet",
            "vg/train-00000-of-00001.parquet"} <= set(names)
    assert check.rows == 8
    assert check.total_bytes == sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"dry run: {folder} -> datasets/someone/corpus (private)"
    listed = [line.split() for line in printed[1:]]
    assert [row[0] for row in listed[:-1]] == names
    assert listed[-1][:4] == ["4", "files,", "8", "rows"]


def test_upload_calls_create_repo_then_upload_folder(folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_printed")
    api = RecordingApi()
    publish(folder, "someone/corpus", private=True, revision="v1", api=api)
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == ("someone/corpus",)
    assert api.calls[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert api.calls[1][2] == {"branch": "v1", "repo_type": "dataset", "exist_ok": True}
    upload = api.calls[2][2]
    assert upload["repo_id"] == "someone/corpus" and upload["folder_path"] == str(folder)
    assert upload["repo_type"] == "dataset" and upload["revision"] == "v1" and upload["allow_patterns"] is None
    assert "token" not in upload and "hf_secret" not in json.dumps([c[2] for c in api.calls], default=str)


def test_big_folder_is_uploaded_one_config_per_commit_with_the_card_last(folder):
    api = RecordingApi()
    publish(folder, "someone/corpus", api=api, large_folder_bytes=1)
    uploads = [kwargs["allow_patterns"] for name, _, kwargs in api.calls if name == "upload_folder"]
    assert uploads == [["coco/**"], ["vg/**"], ["README.md", "corpus_report.json"]]


def test_upload_large_folder_is_used_when_the_client_has_it(folder):
    class LargeApi(RecordingApi):
        def upload_large_folder(self, **kwargs):
            self.calls.append(("upload_large_folder", (), kwargs))

    api = LargeApi()
    publish(folder, "someone/corpus", api=api, large_folder_bytes=1)
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_large_folder"]
    assert api.calls[1][2]["folder_path"] == str(folder) and api.calls[1][2]["repo_type"] == "dataset"


def test_folder_with_an_invalid_row_is_refused(folder, no_network):
    shard = folder / "vg" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    conversations = table.column("conversations").to_pylist()
    conversations[1][0]["value"] = "no image token here <region1>"
    index = table.schema.get_field_index("conversations")
    pq.write_table(table.set_column(index, table.schema.field(index),
                                    [conversations]), shard)
    api = RecordingApi()
    with pytest.raises(PublishRefused, match="vg:train:1.*image_token_once_at_start"):
        publish(folder, "someone/corpus", api=api)
    assert api.calls == []


def test_card_without_licences_is_refused(folder):
    card = folder / "README.md"
    text = card.read_text()
    card.write_text(text.replace("  vg: Visual Genome CC BY 4.0", "  vg: ''"))
    problems = check_folder(folder).problems
    assert problems == ["README.md: config 'vg' has no licence in 'source_licenses'"]
    card.write_text(text.replace("license:\n- cc-by-4.0\n", ""))
    assert check_folder(folder).problems == ["README.md: front matter has no 'license'"]
    card.unlink()
    with pytest.raises(PublishRefused, match="no README.md"):
        publish(folder, "someone/corpus", api=RecordingApi())


def test_missing_shard_and_build_folders_are_refused(folder, tmp_path):
    (folder / "vg" / "train-00000-of-00001.parquet").rename(folder / "vg" / "train-00001-of-00002.parquet")
    problems = check_folder(folder).problems
    assert any("lacks shards [0] of 2" in problem for problem in problems)
    build = write_build(tmp_path / "build", [schema_row("x", "train", "1", image="a.jpg", image_id="1",
                                                        boxes=[[0, 0, 1, 1]])])
    assert any("source build, not a corpus folder" in p for p in check_folder(build).problems)


def test_command_entry_point_dry_run(folder, no_network, capsys):
    cfg = OmegaConf.create({"folder": str(folder), "repo_id": "someone/corpus", "private": False,
                            "revision": None, "dry_run": True, "validate": True, "large_folder_gb": 5})
    assert publish_module.main(cfg) == 0
    assert "dry run" in capsys.readouterr().out
    with pytest.raises(ValueError, match="repo_id"):
        publish(folder, "no-slash", dry_run=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_publish_in_offline_mode_is_a_clear_error_not_a_traceback(folder, capsys):
    """Tests run with HF_HUB_OFFLINE=1: the real client refuses before any socket; the command says so."""
    from gpt4roi.cli import main

    assert main(["publish", f"folder={folder}", "repo_id=someone/corpus"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("gpt4roi publish: error: cannot reach the Hub (https://huggingface.co) to upload to "
                            "datasets/someone/corpus: OfflineModeIsEnabled: ")
    assert "run the same command again" in error and "Traceback" not in error


def test_publish_with_no_server_listening_is_a_clear_error(folder, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(publish_module.PublishFailed) as caught:
        publish(folder, "someone/corpus", api=HfApi(endpoint=endpoint, token="hf_not_a_real_token"))
    assert str(caught.value).startswith(f"cannot reach the Hub ({endpoint}) to upload to datasets/someone/corpus: "
                                        "ConnectError: ")
    assert "hf_not_a_real_token" not in str(caught.value)


def test_a_hub_refusing_the_token_is_a_clear_error(folder, monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from huggingface_hub import HfApi, constants

    class Unauthorized(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = b'{"error": "Invalid credentials in Authorization header"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(publish_module.PublishFailed) as caught:
            publish(folder, "someone/corpus", api=HfApi(endpoint=endpoint, token="hf_wrong"))
    finally:
        server.shutdown()
    message = str(caught.value)
    assert message.startswith(f"the Hub ({endpoint}) refused the upload to datasets/someone/corpus: ")
    assert "401" in message and "HF_TOKEN or `hf auth login`" in message
