"""One writer per original release format; each reads the world and writes one raw root."""
