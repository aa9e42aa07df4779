"""``python -m tireg`` runs the CLI."""

from tireg.cli.app import main

if __name__ == "__main__":
    main()
