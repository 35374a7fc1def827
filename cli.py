"""Run the kerascnn CLI from a checkout without installing: python cli.py ..."""

from kerascnn.cli.commands import main

if __name__ == "__main__":
    main()
