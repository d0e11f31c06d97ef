"""Status webhooks (issue #18): service owners' subscriptions, the events outbox, signed delivery."""
