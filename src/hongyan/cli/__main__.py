from hongyan.cli.main import app

app(prog_name="hongyan")
