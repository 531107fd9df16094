"""``python -m watcher``: the same as the ``finetune-watcher`` command."""

from watcher.cli import main

raise SystemExit(main())
