"""``python -m medtl``: the same as the ``medtl`` command."""

from medtl.cli.main import app

if __name__ == "__main__":
    app(prog_name="medtl")
