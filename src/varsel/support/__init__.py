"""Support and usage: who got what (a recipient's notifications across service owners) and what each owner used.

Read-only services under the support dashboard API, the usage metrics API and the console."""
