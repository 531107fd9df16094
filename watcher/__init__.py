"""finetune-watcher: watch Cohere fine-tuned models, notify when they are ready or fail."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__``, looked up on first use: importlib.metadata costs ~30 ms at start,
    which ``healthcheck`` and the other quick commands need not pay."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("finetune-watcher")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
