"""One module per CLI subcommand, each with ``register(subparsers, common)``.

Keeping each subcommand in its own module lets every feature own its command-line
surface without editing a central file.
"""
