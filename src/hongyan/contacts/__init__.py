"""Contacts: phone numbers, consent, suppression, behaviour data."""
