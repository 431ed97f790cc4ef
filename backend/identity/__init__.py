"""Who is asking and what they may do: API keys, console users, logins and their throttling, console sessions,
the roles-and-permissions table, and the audit trail of who did what.

May import core/, backend.settings and backend.storage.
"""
