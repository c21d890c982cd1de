"""Every string the console shows, in Simplified Chinese (the default) and English."""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_LANG = "zh-CN"
LANGS = ("zh-CN", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "app.name": {"zh-CN": "鸿雁", "en": "Hongyan"},
    "app.tagline": {"zh-CN": "短信营销平台", "en": "SMS marketing platform"},
    "app.console": {"zh-CN": "控制台", "en": "Console"},
    "lang.switch": {"zh-CN": "English", "en": "中文"},
    "lang.switch_label": {"zh-CN": "切换语言", "en": "Switch language"},
    # login
    "login.title": {"zh-CN": "登录", "en": "Log in"},
    "login.heading": {"zh-CN": "登录鸿雁控制台", "en": "Log in to the Hongyan console"},
    "login.email": {"zh-CN": "邮箱", "en": "E-mail"},
    "login.password": {"zh-CN": "密码", "en": "Password"},
    "login.submit": {"zh-CN": "登录", "en": "Log in"},
    "login.hint": {
        "zh-CN": "使用管理员为您创建的账号登录。",
        "en": "Use the account your administrator created for you.",
    },
    "login.form_expired": {
        "zh-CN": "登录表单已过期，请重试",
        "en": "The login form has expired; please try again",
    },
    "login.required": {"zh-CN": "请先登录", "en": "Please log in first"},
    "login.logged_out": {"zh-CN": "您已安全退出", "en": "You have logged out"},
    # top bar
    "top.logout": {"zh-CN": "退出登录", "en": "Log out"},
    "top.user": {"zh-CN": "当前用户", "en": "Signed in as"},
    "top.tenant": {"zh-CN": "租户", "en": "Tenant"},
    "nav.label": {"zh-CN": "主导航", "en": "Main navigation"},
    # navigation
    "nav.dashboard": {"zh-CN": "概览", "en": "Dashboard"},
    "nav.contacts": {"zh-CN": "联系人", "en": "Contacts"},
    "nav.audiences": {"zh-CN": "人群", "en": "Audiences"},
    "nav.content": {"zh-CN": "内容", "en": "Content"},
    "nav.campaigns": {"zh-CN": "活动", "en": "Campaigns"},
    "nav.messages": {"zh-CN": "发送记录", "en": "Messages"},
    "nav.reports": {"zh-CN": "报表", "en": "Reports"},
    "nav.settings": {"zh-CN": "设置", "en": "Settings"},
    "nav.later": {"zh-CN": "即将推出", "en": "Coming later"},
    # roles
    "role.owner": {"zh-CN": "所有者", "en": "Owner"},
    "role.operator": {"zh-CN": "运营", "en": "Operator"},
    "role.analyst": {"zh-CN": "分析员", "en": "Analyst"},
    "role.auditor": {"zh-CN": "审计员", "en": "Auditor"},
    "role.owner.desc": {
        "zh-CN": "可管理全部内容，包括用户、API 密钥和发送策略。",
        "en": "Can manage everything, including users, API keys and the sending policy.",
    },
    "role.operator.desc": {
        "zh-CN": "可导入联系人、运行活动并发送短信。",
        "en": "Can import contacts, run campaigns and send messages.",
    },
    "role.analyst.desc": {
        "zh-CN": "可查看人群与报表，手机号码以掩码显示。",
        "en": "Can read audiences and reports; phone numbers are masked.",
    },
    "role.auditor.desc": {
        "zh-CN": "可查看审计日志和设置。",
        "en": "Can read the audit log and settings.",
    },
    # dashboard
    "dash.title": {"zh-CN": "概览", "en": "Dashboard"},
    "dash.welcome": {"zh-CN": "欢迎回来，{name}", "en": "Welcome back, {name}"},
    "dash.tenant": {"zh-CN": "租户信息", "en": "Tenant"},
    "dash.tenant_name": {"zh-CN": "名称", "en": "Name"},
    "dash.slug": {"zh-CN": "标识", "en": "Slug"},
    "dash.timezone": {"zh-CN": "时区", "en": "Time zone"},
    "dash.signatures": {"zh-CN": "已审核签名", "en": "Approved signatures"},
    "dash.signature_default": {"zh-CN": "默认", "en": "Default"},
    "dash.no_signatures": {
        "zh-CN": "尚无已审核的签名。签名通过审核后才能发送短信。",
        "en": "No approved signature yet. Messages can be sent once a signature is approved.",
    },
    "dash.policy": {"zh-CN": "发送策略", "en": "Sending policy"},
    "dash.quiet_hours": {"zh-CN": "免打扰时段", "en": "Quiet hours"},
    "dash.quiet_hours_value": {
        "zh-CN": "{start} 至次日 {end}（{tz}）",
        "en": "{start} to {end} the next morning ({tz})",
    },
    "dash.marketing": {"zh-CN": "营销短信", "en": "Marketing messages"},
    "dash.allowed": {"zh-CN": "允许", "en": "Allowed"},
    "dash.not_allowed": {"zh-CN": "不允许", "en": "Not allowed"},
    "dash.unsubscribe": {"zh-CN": "退订提示", "en": "Unsubscribe text"},
    "dash.max_parts": {"zh-CN": "单条最多拆分", "en": "Most parts per message"},
    "dash.max_parts_value": {"zh-CN": "{n} 段", "en": "{n} parts"},
    "dash.role": {"zh-CN": "您的角色", "en": "Your role"},
    # sections not built yet
    "later.title": {"zh-CN": "此功能尚未上线", "en": "Not available yet"},
    "later.body": {
        "zh-CN": "「{section}」将在后续版本中提供。"
        "当前版本没有这部分功能，因此这里不显示任何数据。",
        "en": "{section} arrives in a later release. This version does not include it yet, "
        "so there is no data to show here.",
    },
    "later.back": {"zh-CN": "返回概览", "en": "Back to the dashboard"},
    # errors
    "error.title": {"zh-CN": "出错了", "en": "Something went wrong"},
    "error.code": {"zh-CN": "错误代码", "en": "Error code"},
    "error.status": {"zh-CN": "状态码", "en": "Status"},
    "error.home": {"zh-CN": "返回首页", "en": "Go to the start page"},
    "error.csrf": {
        "zh-CN": "安全校验失败，请刷新页面后重试",
        "en": "The security check failed; reload the page and try again",
    },
}


def translate(lang: str, key: str, **values: object) -> str:
    """The text for ``key`` in ``lang``; a missing key is a bug, so it raises."""
    entry = MESSAGES[key]
    text = entry.get(lang) or entry[DEFAULT_LANG]
    return text.format(**values) if values else text


def translator(lang: str) -> Callable[..., str]:
    def t(key: str, **values: object) -> str:
        return translate(lang, key, **values)

    return t
