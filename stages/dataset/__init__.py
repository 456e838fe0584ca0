"""The dataset stage (DOWNLOADING): download, safe extraction, the pre-flight report."""
