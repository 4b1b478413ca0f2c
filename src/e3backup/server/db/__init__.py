"""Tables (`models`), the engine and session factory (`engine`), and Alembic migrations."""
