"""User accounts without a central store of emails or passwords.

An account is the keyed BLAKE2b hash of its email address (ids.py); logging in means clicking
a signed, one-day link sent by email (tokens.py, mailer.py), which gives a session bearer
token. Roles live in the `accounts` table; `session_expunge` lets an admin force a new login.
Request-side helpers (who is calling, role checks) are in auth.py.
"""
