"""[[streams]] and [unsubscribe]: parsed, validated, documented."""

from __future__ import annotations

import pytest

from hurricane.config import ConfigError, config_from_dict, load_config
from hurricane.outcome import StreamKind
from hurricane.streams import DEFAULT_STREAM, feedback_id


def test_streams_parse_with_their_keys() -> None:
    c = config_from_dict({
        "delivery": {"pools": [{"name": "p1", "addresses": ["127.0.0.2"]}]},
        "streams": [
            {"name": "news", "kind": "bulk", "pool": "p1", "feedback_id": "{mailing}:{stream}"},
        ]})
    news = c.stream_set.get("news")
    assert news is not None and news.kind is StreamKind.bulk and news.pool == "p1"
    assert news.scope == "stream:news"
    default = c.stream_set.get(None)
    assert default is not None and default.name == DEFAULT_STREAM and not default.bulk
    assert c.stream_set.get("nope") is None


@pytest.mark.parametrize(("streams", "message"), [
    ([{"name": "news", "kind": "bulky"}], "[streams[0]] kind: expected one of"),
    ([{"name": "news", "colour": "red"}], "[streams[0]] colour: unknown key; expected one of"),
    ([{"name": "a"}, {"name": "a"}], "[streams[1]] name: stream 'a' is defined twice"),
    ([{"name": "a b"}], "[streams[0]] name: expected 1-30 lower-case letters"),
    ([{"name": "transactional", "kind": "bulk"}], "[streams[0]] kind: the default stream"),
    ([{"name": "n", "feedback_id": "{campaign}"}], "unknown field {campaign}"),
    ([{"name": "n", "rate_per_minute": 10}], "rate_per_minute: unknown key"),
])
def test_bad_streams_name_the_key(streams: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"streams": streams})
    assert message in str(e.value)


def test_unsubscribe_section_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[unsubscribe\] base_url"):
        config_from_dict({"unsubscribe": {"base_url": "ftp://x"}})
    with pytest.raises(ConfigError, match=r"\[unsubscribe\] listen\[0\]"):
        config_from_dict({"unsubscribe": {"listen": ["nonsense:1:2"]}})
    c = config_from_dict({"unsubscribe": {"base_url": "https://m.example.com",
                                          "listen": ["tcp:8026:interface=127.0.0.1"]}})
    assert c.unsubscribe.base_url == "https://m.example.com"


def test_shipped_example_still_loads() -> None:
    c = load_config("etc/hurricane.toml")
    assert c.unsubscribe.base_url == "" and c.streams == ()


def test_feedback_id_template() -> None:
    assert feedback_id("{mailing}:{stream}:{sender}", mailing="spring-26", stream="news",
                       sender="acme") == "spring-26:news:acme"
    assert feedback_id("{mailing}:x", mailing="a\r\nInjected: 1", stream="s",
                       sender="z") == "aInjected: 1:x"
