"""Switchboard: the control plane for voice agents on several realtime providers."""
