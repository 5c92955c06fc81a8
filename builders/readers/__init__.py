"""Readers of the raw release formats: streamed JSON, COCO files, Flickr30K Entities, VCR text, safe pickles, image sizes, safe paths."""
