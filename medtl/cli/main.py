"""``medtl``: medical-image segmentation by transfer learning.

Each subcommand runs one stage of the workflow; the Snakemake rules call them, and you
can too. The commands live in one module per stage; importing them here adds them to
:data:`app` in the order ``medtl --help`` lists them.
"""

from __future__ import annotations

import sys

# The command modules add their commands to ``app`` as they are imported, in this
# order: the order ``medtl --help`` lists them in.
# isort: off
from medtl.cli import data  # noqa: F401
from medtl.cli import prepare  # noqa: F401
from medtl.cli import train  # noqa: F401
from medtl.cli import predict  # noqa: F401
from medtl.cli import evaluate  # noqa: F401
from medtl.cli import report  # noqa: F401

# isort: on
from medtl.cli.common import app

__all__ = ["app", "run"]


def run() -> None:  # pragma: no cover
    sys.exit(app())
