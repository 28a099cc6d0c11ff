"""Humanline: a Rasa customer-service bot with a guaranteed handoff to a human."""
