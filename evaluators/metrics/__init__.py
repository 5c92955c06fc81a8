"""Metric implementations: captioning (pycocoevalcap), multiple choice, semantic similarity, bootstrap."""
