"""The day time alone may next move a customer, indexed per partition: the owner re-grades
exactly the customers due, instead of every customer every day.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    # IF NOT EXISTS: 0002 creates the table as shared/db/tables.py declares it, with the
    # column and the index, on a new database.
    op.execute("ALTER TABLE customers ADD COLUMN IF NOT EXISTS due_on date")
    # Customers graded before the schedule existed are due the day after their grading:
    # that re-grade works out their real day.
    op.execute("UPDATE customers SET due_on = graded_on + 1 WHERE due_on IS NULL")
    op.execute("CREATE INDEX IF NOT EXISTS customers_due "
               "ON customers (partition, due_on, customer_id) WHERE due_on IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS customers_due")
    op.execute("ALTER TABLE customers DROP COLUMN IF EXISTS due_on")
