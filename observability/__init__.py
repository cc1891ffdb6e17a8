"""Alert rules, their promtool tests and the Grafana dashboard (see docs/OPERATIONS.md)."""
