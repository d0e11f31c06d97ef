"""varsel: email and SMS notifications for service owners, wire-compatible with Altinn Notifications."""

__version__ = "0.1.0"
