"""Pure SQL builders of the read API: each returns `(sql, params)` for the storage layer, and
the pure shaping of the rows into the answers.

Kept apart from the route handlers so they can be unit-tested and shared (e.g. by bench/).
"""
