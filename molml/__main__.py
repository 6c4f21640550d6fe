"""``python -m molml``: the ``molml`` command."""

from molml.cli import main

if __name__ == "__main__":
    main()
