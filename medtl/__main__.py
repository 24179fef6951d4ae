from medtl.cli.main import app

app(prog_name="medtl")
