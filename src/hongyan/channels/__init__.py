"""Delivery channels (carrier protocols) for outbound and inbound SMS."""
