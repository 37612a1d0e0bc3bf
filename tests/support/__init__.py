"""Real parts for tests and benchmarks: a PostgreSQL server, databases, processes."""
