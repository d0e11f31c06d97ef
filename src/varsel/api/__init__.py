"""The wire dialects of the API that are packaged by version (v1 still lives in varsel.orders)."""
