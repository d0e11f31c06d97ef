"""Shipments: an order as the v2 API shows it (its delivery manifest), and the status feed of finished orders."""
