"""Webhooks: status changes and replies pushed to a tenant's endpoints, signed and retried."""
