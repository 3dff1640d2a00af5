"""Worker-side entry points (filled in by the decode pipeline)."""
