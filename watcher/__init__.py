"""finetune-watcher: watch Cohere fine-tuned models, notify when they are ready or fail."""

__all__ = ["__version__"]

#: The one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``),
#: so no start pays for ``importlib.metadata`` (~30 ms) to look it up.
__version__ = "0.1.0"
