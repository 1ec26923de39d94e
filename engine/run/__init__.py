"""Running executions."""
