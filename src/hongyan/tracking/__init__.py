"""Tracking: per-recipient short links and their clicks, coupons, conversions (attribution)."""
