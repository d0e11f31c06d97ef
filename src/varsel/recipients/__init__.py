"""Contact registries and the rules that turn an order's recipients into addresses."""
