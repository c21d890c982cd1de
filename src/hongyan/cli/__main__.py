from hongyan.cli.main import app

# Guarded: a child process started with multiprocessing's spawn (the contact import's reader)
# imports the parent's __main__ again, and must not run the command a second time.
if __name__ == "__main__":
    app(prog_name="hongyan")
