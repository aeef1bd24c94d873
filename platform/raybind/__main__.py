"""`python -m raybind ...` is the `raybind` command."""

from raybind.cli import main

if __name__ == "__main__":
    main()
