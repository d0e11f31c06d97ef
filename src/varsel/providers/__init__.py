"""Email and SMS providers behind one interface each; the development outbox is the default."""
