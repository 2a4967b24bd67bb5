"""PostgreSQL storage: SQLAlchemy Core tables, the per-transaction store, migrations, audit."""
