"""The self-contained HTML report of a workflow run, with its figures and summary."""
