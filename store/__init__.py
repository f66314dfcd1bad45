"""The mailbox store: maildir++ folders, indexes, change bus."""
