"""Channel kinds: how to build a channel from its spec, and how to read a provider's callbacks."""

from __future__ import annotations

from collections.abc import Callable

from hongyan.channels.base import CallbackParser, Channel, ChannelSpec

ChannelFactory = Callable[[ChannelSpec], Channel]

_FACTORIES: dict[str, ChannelFactory] = {}
_PARSERS: dict[str, CallbackParser] = {}


def register(kind: str, factory: ChannelFactory, parser: CallbackParser | None = None) -> None:
    _FACTORIES[kind] = factory
    if parser is not None:
        _PARSERS[kind] = parser


def _load_builtin() -> None:
    if _FACTORIES:
        return
    from hongyan.channels.http import aliyun, tencent, twilio
    from hongyan.channels.smpp.channel import SmppChannel

    register("smpp", SmppChannel)
    register("aliyun", aliyun.AliyunChannel, aliyun.parse_callback)
    register("tencent", tencent.TencentChannel, tencent.parse_callback)
    register("twilio", twilio.TwilioChannel, twilio.parse_callback)


def kinds() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def build(spec: ChannelSpec) -> Channel:
    _load_builtin()
    try:
        factory = _FACTORIES[spec.kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {spec.kind!r}; known: {kinds()}") from None
    return factory(spec)


def callback_parser(kind: str) -> CallbackParser | None:
    _load_builtin()
    return _PARSERS.get(kind)
