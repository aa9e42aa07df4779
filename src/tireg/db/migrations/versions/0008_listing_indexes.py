"""0008: indexes in listing order, ``lower(name), id``, alone and after ``family``; ``lower(tag)``.

Why: ``tireg list`` and the gallery (``tireg serve``) show the catalogue by name, a page at a
time (``ORDER BY lower(name), id LIMIT 100 OFFSET n``). Without an index in that order SQLite
read and sorted the whole table for every page: about 400 ms at 100,000 embeddings, four times
the gallery's budget for a page. Walking this index reads only the rows a page shows (plus the
offset's index entries). The family filter is the gallery's first choice and SQLite would
otherwise take the family index and sort a third of the table, hence the second index.

``--tag`` and the gallery's tag filter compare tags case-folded; without an index on
``lower(tag)`` each listing with a tag scanned the tags table (250 ms at 100,000 embeddings).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


ORDER = [sa.text("lower(name)"), sa.text("id")]


def upgrade() -> None:
    op.create_index("ix_embeddings_name_order", "embeddings", ORDER)
    op.create_index("ix_embeddings_family_name_order", "embeddings", [sa.text("family"), *ORDER])
    op.create_index("ix_tags_tag_lower", "tags", [sa.text("lower(tag)")])


def downgrade() -> None:
    op.drop_index("ix_tags_tag_lower", table_name="tags")
    op.drop_index("ix_embeddings_family_name_order", table_name="embeddings")
    op.drop_index("ix_embeddings_name_order", table_name="embeddings")
