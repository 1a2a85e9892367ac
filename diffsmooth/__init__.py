"""DiffSmooth reproduction: certified robustness via one-shot diffusion purification and local smoothing."""

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
