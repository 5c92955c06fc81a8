"""Where rows go and come back: atomic Hub-style parquet output, reading built folders, the build report."""
