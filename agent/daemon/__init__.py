"""The long-running service: sample pipeline, state machine, systemd integration."""
