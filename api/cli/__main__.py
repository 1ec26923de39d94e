"""``python -m api.cli``: the ``clipstream`` command (how the tests start roles as processes)."""

from api.cli import main

raise SystemExit(main())
