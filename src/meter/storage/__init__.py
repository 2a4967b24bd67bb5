"""PostgreSQL storage: the per-transaction store (queries), migrations, audit, embedded server."""
