"""``gpt4roi publish``: check a corpus folder and upload it to a Hugging Face Hub dataset repository.

A folder is refused (nothing is sent) unless: its ``README.md`` has front matter with ``configs`` whose
``data_files`` patterns all match shards, a ``license`` and a non-empty ``source_licenses`` entry for every
config; every shard is complete; and every row validates against the schema. ``dry_run=true`` prints what
would be uploaded (files, sizes, total) and never builds an ``HfApi`` client.

The upload uses ``HfApi.create_repo`` (``exist_ok``), ``create_branch`` for a ``revision`` other than main,
then ``upload_large_folder`` when the client has it and the folder is big, otherwise one ``upload_folder``
commit, or — for a big folder — one commit per config and the card last, so that no single commit carries
more than one config's shards. The token comes from the standard places (``HF_TOKEN``, the cached login)
through ``huggingface_hub`` itself; this module never reads or prints it. A Hub that cannot be reached (no
network, offline mode, DNS, timeouts) or that refuses the request (token, permissions) raises
:class:`PublishFailed` with what to do, never a connection traceback.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from builders.corpus.card import CARD_NAME, read_card
from builders.errors import BuildError, SchemaError, SourceFileError
from builders.schema import validate
from builders.storage.datafolder import list_splits

DEFAULT_LARGE_FOLDER_BYTES = 5 * 1024 ** 3
SKIPPED_NAMES = (".cache", ".git", ".huggingface")


class PublishFailed(BuildError):
    """The Hub could not be reached, or refused the upload; the message says which and what to do."""


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What ``huggingface_hub`` raises when no answer comes back: its HTTP client's transport errors, and the
    standard library's (offline mode raises a ``ConnectionError``; DNS a ``socket.gaierror``)."""
    import socket

    import httpx2

    return httpx2.TransportError, ConnectionError, TimeoutError, socket.gaierror


class PublishRefused(BuildError):
    """The folder failed the checks; the message lists every problem found."""

    def __init__(self, folder: Path, problems: list[str]):
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"refusing to publish {folder}:\n{listed}")


@dataclass
class FolderCheck:
    """What the checks found: the files to upload and every problem (empty when publishable)."""

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def upload_files(folder: Path) -> list[tuple[str, int]]:
    """Files that would be uploaded, as (path relative to ``folder``, bytes), sorted; hidden caches skipped."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part in SKIPPED_NAMES or part.startswith(".") for part in relative.parts):
            files.append((relative.as_posix(), path.stat().st_size))
    return files


def _check_card(folder: Path, files: list[str], problems: list[str]) -> None:
    if not (folder / CARD_NAME).is_file():
        problems.append(f"no {CARD_NAME} (the dataset card) in the folder")
        return
    try:
        metadata, _ = read_card(folder)
    except Exception as exc:  # yaml errors of any kind: the card is unusable
        problems.append(f"{CARD_NAME}: front matter is not valid YAML ({exc})")
        return
    if not metadata:
        problems.append(f"{CARD_NAME}: no YAML front matter")
        return
    if not metadata.get("license"):
        problems.append(f"{CARD_NAME}: front matter has no 'license'")
    configs = metadata.get("configs") or []
    if not configs:
        problems.append(f"{CARD_NAME}: front matter declares no 'configs'")
    licences = metadata.get("source_licenses") or {}
    for config in configs:
        name = config.get("config_name", "?")
        if name != "default" and not str(licences.get(name) or "").strip():
            problems.append(f"{CARD_NAME}: config {name!r} has no licence in 'source_licenses'")
        for data_file in config.get("data_files") or []:
            patterns = data_file.get("path")
            for pattern in [patterns] if isinstance(patterns, str) else list(patterns or []):
                if not fnmatch.filter(files, pattern):
                    problems.append(f"{CARD_NAME}: config {name!r} split {data_file.get('split')!r}: "
                                    f"pattern {pattern!r} matches no file")


def check_folder(folder: str | Path, *, validate_rows: bool = True) -> FolderCheck:
    """Run every check of the module docstring; problems are collected, not raised."""
    folder = Path(folder)
    check = FolderCheck(folder)
    if not folder.is_dir():
        check.problems.append("not a folder")
        return check
    check.files = upload_files(folder)
    _check_card(folder, [name for name, _ in check.files], check.problems)
    try:
        splits = list_splits(folder)
    except SourceFileError as exc:
        check.problems.append(str(exc))
        return check
    for split in splits:
        if split.config is None:
            check.problems.append(f"{split.paths[0].parent} is a source build, not a corpus folder "
                                  "(run gpt4roi corpus first)")
            continue
        for batch in split.batches():
            check.rows += batch.num_rows
            if not validate_rows:
                continue
            for row in batch.to_pylist():
                try:
                    validate(row)
                except SchemaError as exc:
                    check.problems.append(f"{split.config}/{split.split}: {exc}")
                    break
    return check


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def print_plan(check: FolderCheck, repo_id: str, *, private: bool, revision: str | None) -> None:
    """Print what a publish would upload: plain aligned lines, so no terminal width ever breaks a file name or
    the repository id across lines (and the output can be pasted or grepped as it is)."""
    print(f"dry run: {check.folder} -> datasets/{repo_id}"
          f"{' (private)' if private else ''}{f' @ {revision}' if revision else ''}")
    lines = [(name, human_bytes(size)) for name, size in check.files]
    lines.append((f"{len(check.files)} files, {check.rows} rows", human_bytes(check.total_bytes)))
    name_width = max(len(name) for name, _ in lines)
    size_width = max(len(size) for _, size in lines)
    for name, size in lines:
        print(f"  {name:<{name_width}}  {size:>{size_width}}")


def _config_groups(files: list[tuple[str, int]]) -> list[list[str]]:
    """Allow-pattern groups for a per-config upload: each top-level folder, then the loose files (card)."""
    folders = sorted({name.split("/", 1)[0] for name, _ in files if "/" in name})
    loose = [name for name, _ in files if "/" not in name]
    return [[f"{name}/**"] for name in folders] + ([loose] if loose else [])


def upload(check: FolderCheck, repo_id: str, *, api: Any, private: bool = False, revision: str | None = None,
           large_folder_bytes: int = DEFAULT_LARGE_FOLDER_BYTES, commit_message: str | None = None) -> str:
    """Create the repository (and branch) and upload the checked folder; returns the repository URL."""
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    message = commit_message or f"Upload corpus ({len(check.files)} files, {human_bytes(check.total_bytes)})"
    big = check.total_bytes > large_folder_bytes
    if big and hasattr(api, "upload_large_folder"):
        api.upload_large_folder(repo_id=repo_id, folder_path=str(check.folder), repo_type="dataset",
                                revision=revision, private=private)
        return str(url)
    groups = _config_groups(check.files) if big else [None]
    for group in tqdm(groups, desc=f"uploading to {repo_id}", unit=" commit", disable=len(groups) == 1):
        api.upload_folder(repo_id=repo_id, folder_path=str(check.folder), repo_type="dataset",
                          revision=revision, commit_message=message if group is None else f"{message}: {group[0]}",
                          allow_patterns=group, ignore_patterns=[f"{name}/**" for name in SKIPPED_NAMES] + [".*"])
    return str(url)


def _send(check: FolderCheck, repo_id: str, api: Any, **options: Any) -> str:
    """:func:`upload`, with the Hub's failures turned into :class:`PublishFailed`."""
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = getattr(api, "endpoint", None) or "the Hugging Face Hub"
    try:
        return upload(check, repo_id, api=api, **options)
    except HfHubHTTPError as exc:
        raise PublishFailed(f"the Hub ({endpoint}) refused the upload to datasets/{repo_id}: {exc}. Check the "
                            "token (HF_TOKEN or `hf auth login`) and that it may write to that repository"
                            ) from None
    except _unreachable_errors() as exc:
        raise PublishFailed(f"cannot reach the Hub ({endpoint}) to upload to datasets/{repo_id}: "
                            f"{type(exc).__name__}: {exc}. Check the network connection (and HF_ENDPOINT, "
                            "HF_HUB_OFFLINE, proxy settings), then run the same command again") from None


def publish(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
            dry_run: bool = False, api: Any = None, large_folder_bytes: int = DEFAULT_LARGE_FOLDER_BYTES,
            validate_rows: bool = True) -> FolderCheck:
    """Check ``folder`` and upload it (or, with ``dry_run``, print the plan); raises :class:`PublishRefused`."""
    if not repo_id or "/" not in repo_id:
        raise ValueError(f"repo_id must be '<user or org>/<name>', got {repo_id!r}")
    check = check_folder(folder, validate_rows=validate_rows)
    if check.problems:
        raise PublishRefused(Path(folder), check.problems)
    if dry_run:
        print_plan(check, repo_id, private=private, revision=revision)
        return check
    if api is None:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()
        api = HfApi()
    url = _send(check, repo_id, api, private=private, revision=revision, large_folder_bytes=large_folder_bytes)
    print(f"uploaded {len(check.files)} files ({human_bytes(check.total_bytes)}) to {url}")
    return check


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi publish folder=<dir> repo_id=<user/name> [private=true] [revision=...]``."""
    publish(cfg.folder, str(cfg.repo_id), private=bool(cfg.private), revision=cfg.revision or None,
            dry_run=bool(cfg.dry_run), large_folder_bytes=int(float(cfg.large_folder_gb) * 1024 ** 3),
            validate_rows=bool(cfg.validate))
    return 0
