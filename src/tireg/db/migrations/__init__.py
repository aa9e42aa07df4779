"""Alembic migrations of the catalogue (run automatically by :func:`tireg.db.open_catalogue`)."""
