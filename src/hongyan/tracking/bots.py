"""Is this request a person, or a machine looking at the link? (pure)

Chat apps fetch a link to draw its preview card the moment a message containing it is pasted;
mail and SMS security gateways open every link they see; scripts and monitors use HTTP tools. Such
requests are answered like any other (a preview must show the real page) but counted apart, so
a campaign's clicks are people. A ``HEAD`` request is never a person's click.
"""

from __future__ import annotations

import functools
import re
from typing import Final

#: (kind, pattern) in order; the first match names the kind.
_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        "preview",
        re.compile(
            r"facebookexternalhit|facebot|twitterbot|slackbot|slack-imgproxy|discordbot|"
            r"telegrambot|whatsapp|linkedinbot|skypeuripreview|embedly|pinterest|redditbot|"
            r"applebot|iframely|vkshare|line-poker|kakaotalk-scrap|"
            r"wechat.*(?:preview|spider|bot)|weixin.*(?:spider|bot)|mpcrawler|"
            r"qq.*(?:spider|bot|preview)|tencenttraveler.*bot|dingtalkbot|feishu.*bot|"
            r"larkbot|bytespider",
            re.IGNORECASE,
        ),
    ),
    (
        "scanner",
        re.compile(
            r"barracuda|proofpoint|mimecast|safelinks|urldefense|forcepoint|zscaler|"
            r"symantec|trendmicro|kaspersky|sophos|fortinet|virustotal|netcraft|"
            r"paloalto|checkpoint|bitdefender|360spider|qihoo|safebrowsing|"
            r"google-safety|urlscan|phishtank|microsoft\s*office|ms-office|outlook-ios",
            re.IGNORECASE,
        ),
    ),
    (
        "tool",
        re.compile(
            r"^(?:curl|wget|python-requests|python-httpx|python-urllib|aiohttp|go-http-client|"
            r"java/|okhttp|libwww-perl|httpie|postmanruntime|insomnia|axios|node-fetch|"
            r"apache-httpclient|wrk|ab/|siege|hey/|k6/)|headless|phantomjs|"
            r"(?:bot|crawler|spider|crawl)\b|baiduspider|sogou|yisouspider|googlebot|bingbot|"
            r"yandex|ahrefs|semrush|uptimerobot|pingdom|statuscake",
            re.IGNORECASE,
        ),
    ),
)


def classify(method: str, user_agent: str) -> str | None:
    """None for a person's click; else ``head``, ``empty``, ``preview``, ``scanner``, ``tool``."""
    if method.upper() == "HEAD":
        return "head"
    return _classify_agent(user_agent)


@functools.lru_cache(maxsize=8192)
def _classify_agent(user_agent: str) -> str | None:
    """By user agent (cached: a campaign's clicks come from a few thousand distinct agents)."""
    ua = user_agent.strip()
    if not ua:
        return "empty"
    for kind, pattern in _RULES:
        if pattern.search(ua):
            return kind
    return None
