"""The dataset card (``README.md``) of a corpus folder: Hub metadata in YAML front matter, then the body.

Front matter: ``configs`` (one per recipe entry, plus ``default``, the union of every entry's files, so the
mix is stored once), ``dataset_info`` (the schema's features and the split sizes of each config), the
licence of every source (``source_licenses``; ``license`` lists their Hub identifiers), task categories and
the size category. Body: statistics per config and task, the assembly counts, the contamination table, the
recipe, the builds' inputs and versions, how to load the corpus and how to get the images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import yaml
from huggingface_hub import DatasetCardData

from builders.corpus.contamination import markdown_table
from builders.corpus.recipe import Entry, Recipe
from builders.corpus.stats import AREA_CLASSES, CorpusStats
from builders.schema import FEATURES

CARD_NAME = "README.md"
TASK_CATEGORIES = ["image-text-to-text", "visual-question-answering"]
# Hub licence id and the terms in words, per builder (the source release's own terms).
LICENSES: dict[str, tuple[str, str]] = {
    "coco": ("cc-by-4.0", "COCO annotations CC BY 4.0; images under the Flickr terms of use of their authors"),
    "refcoco": ("cc-by-4.0", "RefCOCO, per COCO's terms (COCO train2014 images and CC BY 4.0 annotations)"),
    "refcoco+": ("cc-by-4.0", "RefCOCO+, per COCO's terms (COCO train2014 images and CC BY 4.0 annotations)"),
    "refcocog": ("cc-by-4.0", "RefCOCOg, per COCO's terms (COCO train2014 images and CC BY 4.0 annotations)"),
    "vg": ("cc-by-4.0", "Visual Genome CC BY 4.0"),
    "flickr30k": ("other", "Flickr30K / Flickr30K Entities: non-commercial research and educational use only "
                           "(Flickr30K terms of use)"),
    "vcr": ("other", "VCR: non-commercial research use only, under the VCR dataset licence"),
    "llava": ("cc-by-nc-4.0", "LLaVA-Instruct-150K CC BY-NC 4.0 (use should also abide by OpenAI's terms); "
                              "images from COCO train2017"),
}
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
FETCH_IMAGES = {
    "coco": "COCO 2017 images (train2017/, val2017/) from the COCO website",
    "refcoco": "COCO train2014 images, under images/mscoco/images/train2014/ of the refer data root",
    "refcoco+": "COCO train2014 images, under images/mscoco/images/train2014/ of the refer data root",
    "refcocog": "COCO train2014 images, under images/mscoco/images/train2014/ of the refer data root",
    "vg": "Visual Genome images (VG_100K/, VG_100K_2/) from the Visual Genome website",
    "flickr30k": "Flickr30K images (flickr30k-images/), by request from the Flickr30K authors",
    "vcr": "VCR images (vcr1images/), after accepting the VCR licence",
    "llava": "COCO 2017 train images (train2017/)",
}
PLOT_TITLES = {"regions_per_row": "Regions per row", "box_size_aspect": "Box size and aspect",
               "task_mix": "Task mix"}


def declared_files(report: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Shards per config and split, leaving out splits (and configs) that received no row: a config whose
    data_files match nothing would not load."""
    declared = {name: {split: paths for split, paths in per.items() if paths}
                for name, per in report["files"].items()}
    return {name: per for name, per in declared.items() if per}


def size_category(rows: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>100M"


def card_metadata(recipe: Recipe, report: dict[str, Any]) -> dict[str, Any]:
    """The YAML front matter as a plain dict (see the module docstring)."""
    files = declared_files(report)
    entries = {entry.name: entry for entry in recipe.sources}
    configs = []
    splits = sorted({split for per_split in files.values() for split in per_split})
    configs.append({"config_name": "default", "default": True, "data_files": [
        {"split": split, "path": [f"{name}/{split}-*.parquet" for name in files if split in files[name]]}
        for split in splits]})
    for name, per_split in files.items():
        configs.append({"config_name": name, "data_files": [
            {"split": split, "path": f"{name}/{split}-*.parquet"} for split in per_split]})

    written = {name: {split: counts["written"] for split, counts in per.items()}
               for name, per in report["entries"].items()}
    infos = {"default": _info("default", {s: sum(w.get(s, 0) for w in written.values()) for s in splits},
                              {s: sum(b.get(s, 0) for b in report["bytes"].values()) for s in splits})}
    for name, per_split in files.items():
        infos[name] = _info(name, {s: written[name][s] for s in per_split}, report["bytes"][name])
    card_data = DatasetCardData()
    datasets.info.DatasetInfosDict(infos).to_dataset_card_data(card_data)
    dataset_info = card_data.to_dict()["dataset_info"]

    source_licenses = {name: LICENSES.get(entries[name].spec.builder, ("", ""))[1] for name in files}
    hub_ids = sorted({LICENSES[entries[name].spec.builder][0] for name in files
                      if entries[name].spec.builder in LICENSES})
    total = sum(sum(per.values()) for per in written.values())
    return {
        "pretty_name": f"GPT4RoI-style region instruction corpus ({recipe.name})",
        "license": hub_ids,
        "source_licenses": source_licenses,
        "task_categories": TASK_CATEGORIES,
        "language": ["en"],
        "tags": ["region-level", "grounding", "referring-expressions", "instruction-tuning", "gpt4roi"],
        "size_categories": [size_category(total)],
        "configs": configs,
        "dataset_info": dataset_info,
    }


def _info(name: str, rows: dict[str, int], sizes: dict[str, int]) -> datasets.DatasetInfo:
    split_dict = datasets.SplitDict()
    for split in rows:
        split_dict.add(datasets.SplitInfo(name=split, num_bytes=int(sizes.get(split, 0)),
                                          num_examples=int(rows[split])))
    return datasets.DatasetInfo(features=FEATURES, config_name=name, splits=split_dict)


def read_card(folder: str | Path) -> tuple[dict[str, Any], str]:
    """The front matter (parsed) and the body of ``folder/README.md``; ``({}, text)`` without front matter."""
    text = (Path(folder) / CARD_NAME).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 4)
    if end < 0:
        return {}, text
    return yaml.safe_load(text[4:end]) or {}, text[end + 5:]


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join([_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)])


def statistics_table(stats: CorpusStats) -> str:
    """Rows, regions, turns, words and box-area shares per config and task (and per config in total)."""
    header = ["config", "task", "rows", "regions", "regions/row", "max regions", "turns/row", "words/row",
              *(f"box area {name}" for name in AREA_CLASSES), "COCO S/M/L %"]
    rows = []
    for config in stats.configs():
        tasks = sorted(task for name, task in stats.by_config_task if name == config)
        parts = [(task, stats.by_config_task[(config, task)]) for task in tasks]
        if len(parts) > 1:
            parts.append(("(all)", stats.total(config)))
        for task, part in parts:
            summary = part.summary()
            coco = summary["coco_size_share"]
            rows.append([config, task, summary["rows"], summary["regions"], summary["regions_per_row"],
                         summary["max_regions_per_row"], summary["turns_per_row"], summary["words_per_row"],
                         *(f"{summary['box_area_share'][name]}%" for name in AREA_CLASSES),
                         f"{coco['small']}/{coco['medium']}/{coco['large']}"])
    summary = stats.total().summary()
    coco = summary["coco_size_share"]
    rows.append(["**all**", "", summary["rows"], summary["regions"], summary["regions_per_row"],
                 summary["max_regions_per_row"], summary["turns_per_row"], summary["words_per_row"],
                 *(f"{summary['box_area_share'][name]}%" for name in AREA_CLASSES),
                 f"{coco['small']}/{coco['medium']}/{coco['large']}"])
    return _table(header, rows)


def assembly_table(report: dict[str, Any]) -> str:
    columns = ["read", "other_variants", "duplicates_within", "duplicates_across", "decontaminated",
               "candidates", "sampled", "written"]
    rows = [[name, split, *(counts[c] for c in columns)]
            for name, per in report["entries"].items() for split, counts in per.items()]
    return _table(["config", "split", *(c.replace("_", " ") for c in columns)], rows)


def _body(recipe: Recipe, report: dict[str, Any], stats: CorpusStats, plots: list[str],
          metadata: dict[str, Any]) -> str:
    """The card's markdown: one section after the other, each a list of lines ending with a blank one."""
    entries = {entry.name: entry for entry in recipe.sources}
    sections = [
        _introduction(recipe, report, metadata),
        _configs_section(report, entries, metadata),
        _statistics_section(stats, plots),
        _assembly_section(report),
        _contamination_section(report),
        _loading_section(report, entries),
        _recipe_section(report),
        _builds_section(report),
    ]
    return "\n".join(line for section in sections for line in section)


def _introduction(recipe: Recipe, report: dict[str, Any], metadata: dict[str, Any]) -> list[str]:
    lines = [f"# {metadata['pretty_name']}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    return lines + [
        "Region-level instruction-tuning rows in the spatial-instruction schema: an image, the regions it talks "
        "about (`bbox` xyxy in absolute pixels, 0-based continuous coordinates), and a conversation whose human "
        "turns refer to `regions[K-1]` as `<regionK>`. Assembled with `gpt4roi corpus recipe="
        f"{recipe.name}`.", "",
        f"Corpus fingerprint (sha256 of the parquet files): `{report['fingerprint']}`", "",
    ]


def _configs_section(report: dict[str, Any], entries: dict[str, Entry],
                     metadata: dict[str, Any]) -> list[str]:
    """The configs with their builder, splits, rows and licence; entries that wrote nothing are named apart."""
    declared = declared_files(report)
    lines = [
        "## Configs and licences", "",
        "`default` is the mix: every config's files, in the order below. Each source keeps its own licence; "
        "using the mix means accepting all of them.", "",
        _table(["config", "builder", "splits", "rows", "licence"],
               [[name, entries[name].spec.builder, ", ".join(per),
                 sum(c["written"] for c in report["entries"][name].values()),
                 metadata["source_licenses"][name] or "**unknown: check the source's terms**"]
                for name, per in declared.items()]), "",
    ]
    empty = [name for name in report["files"] if name not in declared]
    if empty:
        lines += [f"Recipe entries that contributed no row (not declared as configs): {', '.join(empty)}.", ""]
    return lines


def _statistics_section(stats: CorpusStats, plots: list[str]) -> list[str]:
    lines = [
        "## Statistics per config and task", "",
        "Words are whitespace-separated tokens of all turns. Box area is relative to the image; COCO S/M/L are "
        "boxes under 32², under 96² and above 96² pixels.", "",
        statistics_table(stats), "",
    ]
    if plots:
        lines += [f"![{PLOT_TITLES.get(Path(p).stem, p)}]({p})" for p in plots] + [""]
    return lines


def _assembly_section(report: dict[str, Any]) -> list[str]:
    return ["## Assembly", "",
            "Duplicates are rows identical in image (canonical identity), regions and conversation, within a "
            "config or against a config earlier in the mix. `sample: N` keeps the N rows with the smallest "
            f"sha256(seed, id) (seed {report['settings']['seed']}); `repeat: k` writes each kept row k times "
            "(copies get ids ending in `:r2` ...).", "", assembly_table(report), ""]


def _contamination_section(report: dict[str, Any]) -> list[str]:
    """How images and regions were matched against the evaluation splits, and what was done about it."""
    settings = report["settings"]
    return ["## Contamination", "",
            "Training rows checked against the evaluation splits of the recipe. Images are matched by canonical "
            "identity (COCO id across 2014/2017 file names, Visual Genome `coco_id` / `flickr_id`, Flickr30K id"
            + (f", and a {settings['phash']} perceptual hash" if settings["phash"] else "")
            + f"); a region overlaps when its box has IoU >= {settings['iou']} with a box of the evaluation "
            "row on the same image. "
            + ("Rows overlapping an evaluation image were dropped (`decontaminate=true`, level "
               f"{settings['decontaminate_level']}); the table counts them under *dropped rows*."
               if settings["decontaminate"] else
               "Nothing was dropped (`decontaminate=false`): the table counts what the corpus contains."),
            "", markdown_table(report["contamination"]), ""]


def _loading_section(report: dict[str, Any], entries: dict[str, Entry]) -> list[str]:
    """``load_dataset`` calls, then where the images come from when they are not embedded."""
    declared = declared_files(report)
    lines = ["## How to load", "",
             "```python", "from datasets import load_dataset", "",
             "mix = load_dataset(\"<this folder or repo id>\")            # the default config",
             f"one = load_dataset(\"<this folder or repo id>\", \"{next(iter(declared), 'default')}\")",
             "stream = load_dataset(\"<this folder or repo id>\", split=\"train\", streaming=True)",
             "```", "",
             "`image` is stored undecoded (`Image(decode=False)`): a dict with `path` and `bytes`."]
    if report["settings"]["embed_images"]:
        return lines + ["Images are embedded (`bytes`).", ""]
    lines += ["Images are **not** embedded: `path` is relative to the raw release folder of the row's source, "
              "so download the images and join the path with that folder:", ""]
    for name in declared:
        builder = entries[name].spec.builder
        raw = entries[name].spec.raw or "(the build's raw root)"
        lines.append(f"- `{name}`: {FETCH_IMAGES.get(builder, 'the images of the ' + builder + ' release')}; "
                     f"paths relative to the `{raw}` release folder")
    return lines + [""]


def _recipe_section(report: dict[str, Any]) -> list[str]:
    return ["## Recipe", "", "```yaml", yaml.safe_dump(report["recipe"], sort_keys=False).rstrip(), "```", ""]


def _builds_section(report: dict[str, Any]) -> list[str]:
    """Each build's options, seed, input files and package versions, then the assembly's own versions."""
    lines = ["## Builds", ""]
    for build in report["builds"]:
        lines.append(f"- `{build['builder']}` for {', '.join(build['entries'])}: options "
                     f"`{json.dumps(build['options'], sort_keys=True)}`, seed {build['seed']}")
        for item in build["inputs"]:
            lines.append(f"  - input `{item['file']}` ({item['bytes']} bytes, sha256 `{item['sha256'][:16]}…`)")
        if build["versions"]:
            lines.append(f"  - built with {_versions(build['versions'])}")
    return lines + ["", f"Assembled with {_versions(report['versions'])}.", ""]


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def write_card(folder: Path, recipe: Recipe, report: dict[str, Any], stats: CorpusStats, *,
               plots: bool = True) -> Path:
    """Write ``folder/README.md`` (and the plots under ``folder/plots``)."""
    metadata = card_metadata(recipe, report)
    figures: list[str] = []
    if plots and stats.configs():
        from builders.corpus.plots import write_plots

        figures = write_plots(stats, folder)
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    path = folder / CARD_NAME
    path.write_text(f"---\n{front}---\n\n{_body(recipe, report, stats, figures, metadata)}", encoding="utf-8")
    return path
