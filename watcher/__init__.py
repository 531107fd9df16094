"""finetune-watcher: watch Cohere fine-tuned models, notify when they are ready or fail."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("finetune-watcher")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
