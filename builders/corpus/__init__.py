"""Corpus assembly: recipes, deduplication, contamination, statistics, card and publishing."""
