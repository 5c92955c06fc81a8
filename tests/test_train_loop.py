"""The training loop with a stand-in model: resume exactness, accumulation, freezing, checkpoints, errors.

The stand-in is a small torch module with the GPT4RoI interface the loop relies on (``set_trainable`` over
the four freezing groups, ``.logits`` aligned with ``labels``, per-sample ``boxes``), so the loop's
guarantees are tested in seconds; tests/test_train_tiny.py repeats the important ones with the real model.
Subprocess runs import this module as the model factory (``model_factory=test_train_loop:standin_bundle``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from builders.storage.output import ShardedParquetWriter
from gpt4roi.cli import main as cli_main
from gpt4roi.configs import compose
from gpt4roi.train import main as train_main
from gpt4roi.train.bundle import Bundle
from gpt4roi.train.checkpoint import step_dirs
from gpt4roi.train.metrics import read_metrics

TESTS = Path(__file__).resolve().parent
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
VOCAB = 64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StandInCrash(RuntimeError):
    """The stand-in dying mid-run (as a killed process would, minus the process)."""


# --- the stand-in model -----------------------------------------------------------------------------------
class StandIn(nn.Module):
    """Token embedding + image colour + box features, a causal running mean, dropout, and a head."""

    def __init__(self, width: int, delay: float, dropout: float, crash_at: int):
        super().__init__()
        self.crash_at, self.calls = crash_at, 0
        self.vision = nn.Conv2d(3, 4, 1)
        self.projector = nn.Linear(4, width)
        self.region_module = nn.Sequential(nn.Linear(4 + 4, width), nn.Tanh())
        self.llm = nn.ModuleDict({"embed": nn.Embedding(VOCAB, width), "mix": nn.Linear(width, width),
                                  "drop": nn.Dropout(dropout), "head": nn.Linear(width, VOCAB)})
        self.delay = delay

    def set_trainable(self, groups):
        for name in ("vision", "projector", "region_module", "llm"):
            getattr(self, name).requires_grad_(name in groups)

    def forward(self, input_ids, attention_mask, pixel_values, boxes):
        if self.delay:
            time.sleep(self.delay)
        self.calls += self.training
        if self.crash_at and self.calls == self.crash_at:
            raise StandInCrash(f"stand-in crash at training forward {self.calls}")
        colour = self.vision(pixel_values).mean(dim=(2, 3))                       # (B, 4)
        hidden = self.llm["embed"](input_ids) + self.projector(colour)[:, None]
        for index, sample_boxes in enumerate(boxes):                            # region features at token 1..k
            feats = self.region_module(torch.cat([sample_boxes, colour[index].expand(len(sample_boxes), 4)], 1))
            hidden[index, 1:1 + len(sample_boxes)] = hidden[index, 1:1 + len(sample_boxes)] + feats
        mask = attention_mask[..., None].float()
        running = (hidden * mask).cumsum(1) / mask.cumsum(1).clamp(min=1)
        hidden = hidden + torch.tanh(self.llm["mix"](self.llm["drop"](running)))
        return SimpleNamespace(logits=self.llm["head"](hidden))


def standin_encode(row, image):
    """Characters as tokens; only assistant text is supervised; boxes normalised by the image size."""
    ids, labels = [1], [-100]
    for turn in row["conversations"]:
        piece = [2 + ord(c) % (VOCAB - 2) for c in turn["value"]]
        ids += piece
        labels += piece if turn["from"] == "gpt" else [-100] * len(piece)
    scale = torch.tensor([row["width"], row["height"]] * 2, dtype=torch.float32)
    boxes = torch.tensor([r["bbox"] for r in row["regions"]], dtype=torch.float32).reshape(-1, 4) / scale
    pixels = torch.tensor(list(image.resize((8, 8)).getdata()), dtype=torch.float32).T.reshape(3, 8, 8) / 255
    return {"ids": ids, "labels": labels, "boxes": boxes, "pixels": pixels}


def standin_collate(items):
    longest = max(len(item["ids"]) for item in items)
    input_ids = torch.zeros((len(items), longest), dtype=torch.long)
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    attention = torch.zeros((len(items), longest), dtype=torch.long)
    for index, item in enumerate(items):
        input_ids[index, :len(item["ids"])] = torch.tensor(item["ids"])
        labels[index, :len(item["ids"])] = torch.tensor(item["labels"])
        attention[index, :len(item["ids"])] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention,
            "pixel_values": torch.stack([item["pixels"] for item in items]), "boxes": [i["boxes"] for i in items]}


def standin_bundle(model_cfg, max_length):
    width, delay = int(model_cfg.get("standin_width", 16)), float(model_cfg.get("standin_delay", 0.0))
    dropout = float(model_cfg.get("standin_dropout", 0.1))
    crash_at = int(model_cfg.get("standin_crash_at", 0))
    return Bundle(model=StandIn(width, delay, dropout, crash_at), encode=standin_encode, collate=standin_collate,
                  identity={"standin_width": width}, layer_classes=(nn.Linear,))  # FSDP shards each Linear


# --- a small corpus with real images ----------------------------------------------------------------------
def corpus_rows(count: int, split: str, seed: int) -> list[tuple[dict, Image.Image]]:
    """Rows asking for the colour of a box drawn on a grey image, with the image to write."""
    generator = torch.Generator().manual_seed(seed)
    names = sorted(COLOURS)
    rows = []
    for index in range(count):
        x1, y1 = (int(v) for v in torch.randint(0, 20, (2,), generator=generator))
        w, h = (int(v) for v in torch.randint(6, 12, (2,), generator=generator))
        colour = names[int(torch.randint(0, len(names), (1,), generator=generator))]
        image = Image.new("RGB", (32, 32), (128, 128, 128))
        image.paste(COLOURS[colour], (x1, y1, x1 + w, y1 + h))
        path = f"images/{split}-{index:04d}.png"
        rows.append(({
            "id": f"synthetic:{split}:{index}", "source": "synthetic", "variant": "", "task": "region_caption",
            "split": split, "image": path, "image_id": str(index), "width": 32, "height": 32,
            "regions": [{"bbox": [float(x1), float(y1), float(x1 + w), float(y1 + h)], "segmentation": "",
                         "label": colour, "source_id": str(index)}],
            "conversations": [{"from": "human", "value": "<image>\nWhat colour is <region1>?"},
                              {"from": "gpt", "value": f"It is {colour}."}],
            "choices": [], "label": -1, "references": [], "meta": "{}"}, image))
    return rows


def write_corpus(folder: Path, images: Path, splits: dict[str, int], bad_row: dict | None = None) -> Path:
    """A corpus folder (``data/<split>-*.parquet``) and its images; ``bad_row`` is appended to train."""
    for split, count in splits.items():
        writer = ShardedParquetWriter(folder / "data", split)
        for row, image in corpus_rows(count, split, seed=len(split)):
            (images / row["image"]).parent.mkdir(parents=True, exist_ok=True)
            image.save(images / row["image"])
            writer.write(row)
        if bad_row is not None and split == "train":
            writer.write(bad_row)
        writer.close()
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("train_corpus")
    write_corpus(root / "corpus", root / "raw", {"train": 48, "validation": 8})
    return SimpleNamespace(path=root / "corpus", images=root / "raw")


def overrides(corpus, out: Path, *extra: str) -> list[str]:
    """A stand-in run on ``corpus``: global batch 4, fp32, fast saves, no progress bars."""
    return ["model_factory=test_train_loop:standin_bundle", f"corpus.path={corpus.path}",
            f"corpus.image_root={corpus.images}", f"out={out}", f"cache_dir={out.parent / 'cache'}",
            "progress=false", "trainer=tiny", "trainer.global_batch_size=4", "trainer.per_device_batch_size=4",
            "trainer.num_workers=0", "trainer.optimizer.lr=0.01", "trainer.epochs=2", "trainer.save_every=5",
            "trainer.trainable=[region_module,projector,llm]", *extra]


def run(corpus, out: Path, *extra: str) -> list[dict]:
    assert train_main(compose("train", overrides(corpus, out, *extra))) == 0
    return [record for record in read_metrics(out) if "loss" in record]


def losses(records: list[dict]) -> list[float]:
    return [record["loss"] for record in records]


# --- tests ------------------------------------------------------------------------------------------------
def test_loss_falls_and_run_folder_is_complete(corpus, tmp_path):
    records = run(corpus, tmp_path / "run", "eval_corpus.path=" + str(corpus.path))
    assert [r["step"] for r in records] == list(range(1, 25))  # 48 rows / 4 per step x 2 epochs
    assert sum(losses(records)[-4:]) / 4 < 0.6 * sum(losses(records)[:4]) / 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_loss_last"] < summary["eval_loss_first"]
    assert [path.name for path in step_dirs(tmp_path / "run" / "checkpoints")] == ["step-0000020", "step-0000024"]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_accumulation_and_micro_batches_give_the_same_steps(corpus, tmp_path):
    """Without dropout, 4 rows at once and 4 accumulated single rows are the same optimisation."""
    no_dropout = ("trainer.max_steps=6", "+architecture.standin_dropout=0")
    whole = run(corpus, tmp_path / "whole", *no_dropout)
    accumulated = run(corpus, tmp_path / "accum", *no_dropout, "trainer.per_device_batch_size=1")
    assert losses(accumulated) == pytest.approx(losses(whole), rel=1e-5)


def test_stage_one_trains_only_the_region_module(corpus, tmp_path):
    from safetensors.torch import load_file

    run(corpus, tmp_path / "s1", "trainer.max_steps=3", "trainer.trainable=[region_module]")
    first = load_file(step_dirs(tmp_path / "s1" / "checkpoints")[0].parent / "step-0000003" / "model.safetensors")
    torch.manual_seed(0)
    fresh = standin_bundle({}, 64).model.state_dict()
    changed = {name for name, tensor in first.items() if not torch.equal(tensor, fresh[name])}
    assert changed and all(name.startswith("region_module.") for name in changed)

    run(corpus, tmp_path / "s2", "trainer.max_steps=2", f"init_from={tmp_path / 's1'}",
        "trainer.trainable=[region_module,projector,llm]")
    state = json.loads((tmp_path / "s2" / "final" / "state.json").read_text())
    assert state["step"] == 2  # weights only: the step counter (and schedule, optimiser) restart


def test_resume_after_a_crash_matches_an_uninterrupted_run(corpus, tmp_path):
    """A run dying in step 33 (after the checkpoint of step 30), resumed, has the reference loss at every step."""
    args = ["trainer.epochs=4", "trainer.save_every=10"]
    reference = losses(run(corpus, tmp_path / "reference", *args))
    out = tmp_path / "crashed"
    with pytest.raises(StandInCrash):
        run(corpus, out, *args, "+architecture.standin_crash_at=33")
    assert [path.name for path in step_dirs(out / "checkpoints")] == ["step-0000020", "step-0000030"]
    assert max(r["step"] for r in read_metrics(out)) == 32
    resumed = run(corpus, out, *args, "resume=true")
    assert [r["step"] for r in resumed] == list(range(1, 49))
    assert losses(resumed) == pytest.approx(reference, abs=1e-6)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(corpus, tmp_path):
    """A subprocess run is SIGKILLed after step 30, resumed with resume=true, and reaches step 48."""
    args = ["trainer.epochs=4", "trainer.save_every=10", "+architecture.standin_delay=0.02"]
    reference = losses(run(corpus, tmp_path / "reference", *args))
    assert len(reference) == 48
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "gpt4roi.train", *overrides(corpus, out, *args)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(r.get("step", 0) >= 31 for r in read_metrics(out)):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert step_dirs(out / "checkpoints")[-1].name == "step-0000030"
    resumed = losses(run(corpus, out, *args, "resume=true"))
    assert len(resumed) == 48
    assert resumed == pytest.approx(reference, abs=1e-6)


def test_checkpoints_of_another_model_config_are_refused(corpus, tmp_path, capsys):
    run(corpus, tmp_path / "a", "trainer.max_steps=2")
    code = cli_main(["train", *overrides(corpus, tmp_path / "a", "trainer.max_steps=2", "resume=true",
                                          "+architecture.standin_width=24")])
    assert code == 1
    assert '"standin_width": 16' in capsys.readouterr().err
    code = cli_main(["train", *overrides(corpus, tmp_path / "b", f"init_from={tmp_path / 'a'}",
                                          "+architecture.standin_width=24")])
    error = capsys.readouterr().err
    assert code == 1 and "another model config" in error and "llm.embed.weight" in error
    assert cli_main(["train", *overrides(corpus, tmp_path / "a", "trainer.max_steps=2")]) == 1
    assert "resume=true" in capsys.readouterr().err  # an existing run is never overwritten silently


def test_bad_runs_fail_before_training(corpus, tmp_path, capsys):
    out = tmp_path / "bad"
    assert cli_main(["train", *overrides(corpus, out, "trainer.optimizer.lr=-1")]) == 1
    assert "trainer.optimizer.lr=-1" in capsys.readouterr().err
    assert cli_main(["train", *overrides(corpus, out, "trainer.global_batch_size=6")]) == 1
    assert "not a multiple" in capsys.readouterr().err
    assert cli_main(["train", *overrides(corpus, out, "trainer.learning_rate=1")]) == 2  # Hydra: no such key
    assert "learning_rate" in capsys.readouterr().err
    missing = overrides(corpus, out)
    missing[1] = f"corpus.path={tmp_path / 'nowhere'}"
    assert cli_main(["train", *missing]) == 1
    error = capsys.readouterr().err
    assert "nowhere" in error and "does not exist" in error
    assert not out.exists()
