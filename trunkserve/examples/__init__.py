"""Example data for trying the bundle on a task of your own (no download)."""
