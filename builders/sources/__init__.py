"""The registry of source builders: ``source name -> builder class``, imported lazily."""

from __future__ import annotations

import importlib

from builders.sources.base import RegionBuilder

BUILDERS: dict[str, str] = {
    "coco": "builders.sources.coco:CocoBuilder",
    "refcoco": "builders.sources.refcoco:RefCocoBuilder",
    "refcoco+": "builders.sources.refcoco:RefCocoPlusBuilder",
    "refcocog": "builders.sources.refcoco:RefCocogBuilder",
    "vg": "builders.sources.vg:VisualGenomeBuilder",
    "flickr30k": "builders.sources.flickr30k:Flickr30kBuilder",
    "vcr": "builders.sources.vcr:VcrBuilder",
    "llava": "builders.sources.llava:LlavaBuilder",
}


def builder_class(source: str) -> type[RegionBuilder]:
    """The builder class of ``source``; a clear error lists the known names."""
    try:
        target = BUILDERS[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(BUILDERS)}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
