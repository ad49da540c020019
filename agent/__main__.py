"""Lets ``python -m agent`` behave exactly like the ``algocyte-agent`` console script."""

from agent.cli import main

raise SystemExit(main())
