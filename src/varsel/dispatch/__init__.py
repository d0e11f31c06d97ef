"""The pipeline: due orders become notifications, notifications travel to the providers and to a final status."""
