"""Helpers of the local-files plugin: paths, mounts, extents, overwrite, walk."""
