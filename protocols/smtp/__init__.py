"""SMTP: sans-IO server core and its trio I/O layer."""
