"""Baseline: the schema as central/schema.py defines it at the first release.

A new database is created from schema.py and stamped with the head revision, so this revision has
nothing to do; later revisions change existing databases to match schema.py.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
