"""Delivery of results and intake of commands over MQTT."""
