"""`thermvision-db` on the command line (the console script's entry point is `thermvision_db.cli:main`)."""

from thermvision_db.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
