"""Numbered migrations, one file each; every file says why it exists."""
