"""POP3: sans-IO core and its trio I/O layer."""
