"""Channels that are HTTP provider accounts: Alibaba Cloud SMS, Tencent Cloud SMS, Twilio.

Each module holds the provider's request signing (plain functions, tested against the providers'
published examples), the channel (``submit`` over a pooled ``httpx.AsyncClient``), the mapping of
the provider's error codes to our :class:`~hongyan.dispatch.states.Reason`, and the parser of the
provider's push callbacks (delivery reports and replies). :mod:`.common` has what they share.
"""
