"""The v1 wire dialect (/orders…): request and response models, validation messages, endpoints."""
