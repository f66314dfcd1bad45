"""IMAP4rev1/IMAP4rev2: sans-IO parser and its trio I/O layer."""
