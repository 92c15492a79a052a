"""The search: loop, SQLite store, loggers, outputs."""
