"""apprise URLs without loading all of apprise's plugins.

``apprise.Apprise.add(url)`` imports every one of its ~190 plugin modules (~270 schemes)
the first time it parses a URL: 0.2-0.5 s and ~13 MB that a watcher with a handful of
targets never uses. ``add`` here does what ``Apprise.add`` does for a string -- split it
into URLs (``parse_urls``), parse each with its plugin's ``parse_url``, build the plugin,
refuse a disabled one -- but imports only the plugin module of each URL's scheme, found in
``PLUGIN_SCHEMES``. A scheme not in the table (a native URL such as ``https://discord.com/
...``, a plugin added by a newer apprise) or a module that no longer declares it goes
through apprise's own ``Apprise.instantiate``, so the outcome is always apprise's; only
the time differs. ``tests/test_notify.py`` checks the table against the installed apprise
(regenerate it with ``python -m watcher.apprise_urls``).
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

__all__ = ["PLUGIN_SCHEMES", "add", "instantiate", "plugin_for", "scheme_modules"]

#: apprise's plugin module (``apprise.plugins.<name>``) -> the schemes it declares.
PLUGIN_SCHEMES: dict[str, str] = {
    "acs": "acs",
    "africas_talking": "atalk",
    "amqp": "amqp amqps",
    "apprise_api": "apprise apprises",
    "aprs": "aprs",
    "awswhatsapp": "awswhatsapp",
    "bale": "bale",
    "bark": "bark barks",
    "betterstack": "betterstack",
    "blink1": "blink1",
    "bluesky": "bluesky bsky",
    "brevo": "brevo",
    "bulksms": "bulksms",
    "bulkvs": "bulkvs",
    "burstsms": "burstsms kudosity",
    "chanify": "chanify",
    "clickatell": "clickatell",
    "clicksend": "clicksend",
    "cliq": "cliq zcliq zohocliq",
    "cm": "cm",
    "custom_form": "form forms",
    "custom_json": "json jsons",
    "custom_xml": "xml xmls",
    "d7networks": "d7sms",
    "dapnet": "dapnet",
    "dbus": "dbus kde qt",
    "deltachat": "deltachat deltachats",
    "dingtalk": "dingtalk",
    "discord": "discord",
    "dot": "dot",
    "eight00com": "eight00com",
    "email": "mailto mailtos",
    "emby": "emby embys",
    "enigma2": "enigma2 enigma2s",
    "evolution": "evolution evolutions",
    "exotel": "exotel",
    "fcm": "fcm",
    "feishu": "feishu",
    "firehydrant": "firehydrant",
    "flock": "flock",
    "flowtriq": "flowtriq flowtriqs",
    "fluxer": "fluxer fluxers",
    "fortysixelks": "46elks elks",
    "freemobile": "freemobile",
    "github": "github",
    "glib": "gio glib",
    "gnome": "gnome",
    "goalert": "goalert goalerts",
    "google_chat": "gchat",
    "gorush": "gorush gorushs",
    "gotify": "gotify gotifys",
    "groundmail": "groundmail",
    "groupme": "groupme",
    "growl": "growl",
    "guilded": "guilded",
    "gupshup": "gupshup",
    "home_assistant": "hassio hassios",
    "httpsms": "httpsms",
    "humhub": "humhub humhubs",
    "ifttt": "ifttt",
    "ilert": "ilert",
    "incidentio": "incidentio",
    "infobip": "infobip",
    "instagram": "instagram",
    "irc": "irc ircs",
    "jellyfin": "jellyfin jellyfins",
    "jira": "jira",
    "join": "join",
    "kakaotalk": "kakao kakaotalk",
    "kaleyra": "kaleyra klr",
    "kavenegar": "kavenegar",
    "kodi": "kodi kodis xbmc xbmcs",
    "kook": "kook",
    "kumulos": "kumulos",
    "lametric": "lametric lametrics",
    "lark": "lark",
    "lauther": "lauther",
    "lfgalarm": "lfg",
    "line": "line",
    "macosx": "macosx",
    "mailersend": "mailersend",
    "mailgun": "mailgun",
    "mastodon": "mastodon mastodons toot toots",
    "matrix": "matrix matrixs",
    "mattermost": "mmost mmosts",
    "messagebird": "msgbird",
    "misskey": "misskey misskeys",
    "mobilemessage": "mobilemessage mobilemsg",
    "mqtt": "mqtt mqtts",
    "msg91": "msg91",
    "nextcloud": "ncloud nclouds",
    "nextcloudtalk": "nctalk nctalks",
    "nostr": "nostr",
    "notica": "notica noticas",
    "notifiarr": "notifiarr",
    "notifico": "notifico notificos",
    "notifyapp": "notifyapp",
    "notifyre": "notifyre",
    "ntfy": "ntfy ntfys",
    "octopush": "octopush",
    "office365": "azure o365",
    "one_signal": "onesignal",
    "onebot": "onebot onebots",
    "opsgenie": "opsgenie",
    "opsimate": "opsimate opsimates",
    "pagerduty": "pagerduty",
    "pagertree": "pagertree",
    "parseplatform": "parsep parseps",
    "pinglet": "pinglet pinglets",
    "pingram": "pingram",
    "plivo": "plivo",
    "postmark": "postmark",
    "prowl": "prowl",
    "pushbullet": "pbul",
    "pushdeer": "pushdeer pushdeers",
    "pushed": "pushed",
    "pushjet": "pjet pjets",
    "pushme": "pushme",
    "pushover": "pover",
    "pushplus": "pushplus wecom",
    "pushsafer": "psafer psafers",
    "pushward": "pushward",
    "pushy": "pushy",
    "qq": "qq",
    "reddit": "reddit",
    "resend": "resend",
    "revolt": "revolt",
    "ringcentral": "ringc",
    "rocketchat": "rocket rockets",
    "rsyslog": "rsyslog",
    "ryver": "ryver",
    "sendgrid": "sendgrid",
    "sendpulse": "sendpulse",
    "serverchan": "schan",
    "serwersms": "serwersms",
    "ses": "ses",
    "seven": "seven",
    "sfr": "sfr",
    "signal_api": "signal signals",
    "signalgrid": "signalgrid",
    "signl4": "signl4",
    "simplepush": "simplepush spush",
    "sinch": "sinch",
    "slack": "slack",
    "smpp": "smpp smpps",
    "smsc": "smsc",
    "smseagle": "smseagle smseagles",
    "smsmanager": "smsmanager smsmgr",
    "smstunnel": "smstunnel",
    "smtp2go": "smtp2go",
    "sns": "sns",
    "sogs": "session sessions sogs",
    "sparkpost": "sparkpost",
    "spike": "spike",
    "splunk": "splunk victorops",
    "spugpush": "spugpush",
    "squadcast": "squadcast",
    "stackfield": "stackfield",
    "streamlabs": "strmlabs",
    "synology": "synology synologys",
    "syslog": "syslog",
    "techuluspush": "push",
    "telegram": "tgram",
    "telesign": "telesign",
    "telnyx": "telnyx",
    "threema": "threema",
    "trigv": "trigv trigvs",
    "twilio": "twilio",
    "twist": "twist",
    "twitter": "tweet twitter x",
    "vapid": "vapid",
    "viber": "viber",
    "voipms": "voipms",
    "vonage": "nexmo vonage",
    "webexteams": "webex wxteams",
    "wechat": "wechat",
    "wecombot": "wecombot",
    "whapi": "whapi",
    "whatsapp": "whatsapp",
    "windows": "windows",
    "workflows": "workflow workflows",
    "wpush": "wpush",
    "wxpusher": "wxpusher",
    "xmatters": "xmatters",
    "xmpp": "xmpp xmpps",
    "youlmk": "youlmk",
    "zalo": "zalo",
    "zoom": "zoom",
    "zulip": "zulip",
}

_lock = threading.Lock()
_by_scheme: dict[str, str] = {}
_plugins: dict[str, Any] = {}


def scheme_modules() -> dict[str, str]:
    """scheme -> plugin module name, from ``PLUGIN_SCHEMES``."""
    if not _by_scheme:
        _by_scheme.update(
            {s: module for module, schemes in PLUGIN_SCHEMES.items() for s in schemes.split()}
        )
    return _by_scheme


def plugin_for(scheme: str) -> Any:
    """The plugin class for ``scheme`` (lower case), importing only its module; ``None``
    when the table does not know the scheme or its module does not declare it."""
    with _lock:
        if scheme in _plugins:
            return _plugins[scheme]
        plugin = None
        module_name = scheme_modules().get(scheme)
        if module_name is not None:
            from apprise.plugins.base import NotifyBase

            try:
                module = importlib.import_module(f"apprise.plugins.{module_name}")
            except ImportError:
                module = None
            for name in dir(module) if module is not None else ():
                obj = getattr(module, name)
                if (
                    name.startswith("Notify")
                    and isinstance(obj, type)
                    and issubclass(obj, NotifyBase)
                    and obj is not NotifyBase
                    and scheme in _schemes_of(obj)
                ):
                    plugin = obj
                    break
        _plugins[scheme] = plugin
        return plugin


def _schemes_of(plugin: type) -> set[str]:
    schemes = getattr(plugin, "schemas", None)
    try:
        return {s.lower() for s in schemes(plugin)} if callable(schemes) else set()
    except Exception:
        return set()


def instantiate(url: str, asset: Any) -> Any:
    """The apprise plugin object for one URL, or ``None`` where apprise would refuse it
    (``Apprise.instantiate(url, asset=asset)``, the same checks in the same order)."""
    import apprise
    from apprise.utils.parse import GET_SCHEMA_RE

    url_ = url.replace("/#", "/%23")
    match = GET_SCHEMA_RE.match(url_)
    plugin = plugin_for(match.group("schema").lower()) if match else None
    if plugin is None:
        return apprise.Apprise.instantiate(url, asset=asset)
    if not plugin.enabled:
        return None
    try:
        results = plugin.parse_url(url_)
    except Exception:
        return None
    if not results:
        return None
    results["tag"] = set()
    results["asset"] = asset
    try:
        instance = plugin(**results)
    except Exception:
        return None
    return instance if instance.enabled else None


def add(sender: Any, services: str) -> bool:
    """``sender.add(services)`` for a string of URLs (``apprise.Apprise``), loading only
    the plugins those URLs use: every URL that apprise accepts is added; True when all were."""
    from apprise.utils.parse import parse_urls

    urls = parse_urls(services)  # type: ignore[no-untyped-call]
    if not urls:
        return False
    ok = True
    for url in urls:
        instance = instantiate(url, sender.asset)
        if instance is None:
            ok = False
            continue
        sender.add(instance)
    return ok


def _scan() -> dict[str, str]:
    """``PLUGIN_SCHEMES`` as the installed apprise has it (loads every plugin)."""
    from apprise.manager_plugins import NotificationManager

    manager: Any = NotificationManager()  # type: ignore[no-untyped-call]
    manager.load_modules()
    # apprise's own plugins only: a custom one (``apprise.decorators.notify``) is no module.
    native = {m["path"].split(".")[2] for m in manager._module_map.values() if m.get("native")}
    by_module: dict[str, list[str]] = {}
    for scheme, plugin in manager._schema_map.items():
        module = plugin.__module__.split(".")[2]
        if module in native:
            by_module.setdefault(module, []).append(scheme)
    return {module: " ".join(sorted(s)) for module, s in sorted(by_module.items())}


if __name__ == "__main__":  # pragma: no cover -- prints the table to paste above
    for module, schemes in _scan().items():
        sys.stdout.write(f'    "{module}": "{schemes}",\n')
