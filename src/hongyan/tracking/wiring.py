"""Connect tracking to the campaigns capability: per-recipient links and coupons at launch, and
the click and conversion rates for A/B decisions.

The two capabilities meet only here, so neither imports the other: campaigns keep a registry of
hooks (``campaigns.extras.register``, ``campaigns.service.register_metric``) and this module fills
it. :func:`connect` is called when the campaigns service is imported.
"""

from __future__ import annotations


def connect() -> None:
    from hongyan.campaigns import extras
    from hongyan.campaigns.service import register_metric
    from hongyan.tracking import metrics
    from hongyan.tracking.issue import per_recipient

    extras.register("tracking", per_recipient)
    register_metric("click_rate", metrics.click_counts)
    register_metric("conversion_rate", metrics.conversion_counts)
