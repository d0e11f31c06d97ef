"""Delivery reports from providers, and the history of every hand-over to a provider."""
